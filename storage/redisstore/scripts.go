package redisstore

import "github.com/redis/go-redis/v9"

// Every script touches the keys of one room only, all under its hash tag,
// so it runs on one shard of a Redis Cluster.

// commitScript applies one batch after checking the fencing token, so the
// check and the write are one atomic step: a former owner whose lease was
// taken over can never write once the new owner holds a newer token.
//
// KEYS: kv (hash key→value), keys (sorted set of keys, all score 0, so
// ZRANGEBYLEX lists them in byte order), members (hash id→record),
// meta (hash: bytes, alarm), fence (the room's highest token).
// ARGV: token, deleteAll (0|1), puts count, key value..., deletes count,
// key..., members count, id "+data"|"-"..., alarm ("" keep, "-" delete,
// else unix nanoseconds).
// Returns {-1, 0} when fenced, else {1 if the room is now empty or 0 if
// not, the room's bytes of keys and values}.
var commitScript = redis.NewScript(`
local tok = tonumber(ARGV[1])
if tok > 0 then
  local cur = tonumber(redis.call('GET', KEYS[5]) or '0')
  if tok < cur then return {-1, 0} end
  if tok > cur then redis.call('SET', KEYS[5], ARGV[1]) end
end
local bytes = tonumber(redis.call('HGET', KEYS[4], 'bytes') or '0')
local i = 2
if ARGV[i] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2])
  bytes = 0
end
i = i + 1
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local k, v = ARGV[i], ARGV[i + 1]
  i = i + 2
  local old = redis.call('HGET', KEYS[1], k)
  if old then
    bytes = bytes - #old
  else
    bytes = bytes + #k
    redis.call('ZADD', KEYS[2], 0, k)
  end
  bytes = bytes + #v
  redis.call('HSET', KEYS[1], k, v)
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local k = ARGV[i]
  i = i + 1
  local old = redis.call('HGET', KEYS[1], k)
  if old then
    bytes = bytes - #k - #old
    redis.call('HDEL', KEYS[1], k)
    redis.call('ZREM', KEYS[2], k)
  end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local id, rec = ARGV[i], ARGV[i + 1]
  i = i + 2
  if rec == '-' then
    redis.call('HDEL', KEYS[3], id)
  else
    redis.call('HSET', KEYS[3], id, string.sub(rec, 2))
  end
end
local alarm = ARGV[i]
if alarm == '-' then
  redis.call('HDEL', KEYS[4], 'alarm')
elseif alarm ~= '' then
  redis.call('HSET', KEYS[4], 'alarm', alarm)
end
if bytes == 0 then
  redis.call('HDEL', KEYS[4], 'bytes')
else
  redis.call('HSET', KEYS[4], 'bytes', bytes)
end
if redis.call('ZCARD', KEYS[2]) == 0 and redis.call('HLEN', KEYS[3]) == 0 and redis.call('HEXISTS', KEYS[4], 'alarm') == 0 then
  return {1, bytes}
end
return {0, bytes}
`)

// listScript reads a range of keys and their values in one atomic step.
// KEYS: kv, keys. ARGV: min, max (ZRANGEBYLEX syntax), limit (-1: all),
// reverse (0|1). Returns key, value, key, value...
var listScript = redis.NewScript(`
local ks
if ARGV[4] == '1' then
  ks = redis.call('ZRANGE', KEYS[2], ARGV[2], ARGV[1], 'BYLEX', 'REV', 'LIMIT', 0, ARGV[3])
else
  ks = redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[2], 'BYLEX', 'LIMIT', 0, ARGV[3])
end
if #ks == 0 then return {} end
local vs = redis.call('HMGET', KEYS[1], unpack(ks))
local out = {}
for j = 1, #ks do
  out[2 * j - 1] = ks[j]
  out[2 * j] = vs[j]
end
return out
`)

// statScript reads what the room index tells of a room.
// KEYS: keys, members, meta. Returns keys, bytes, alarm ("" none), members.
var statScript = redis.NewScript(`
return {redis.call('ZCARD', KEYS[1]), redis.call('HGET', KEYS[3], 'bytes') or '0',
  redis.call('HGET', KEYS[3], 'alarm') or '', redis.call('HLEN', KEYS[2])}
`)

// fixAlarmScript corrects the alarm index entry of one room to what the
// room's own record says, unless the entry changed since it was read (an
// owner's commit got there first, and its own final write is exact).
// KEYS: alarm index. ARGV: member, score read, new score ("" removes).
var fixAlarmScript = redis.NewScript(`
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur == false or tonumber(cur) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
`)

// acquireScript takes a free lease, or one the same node holds (anew: a
// former instance of the room on that node is then fenced out), and hands
// out the next fencing token.
// KEYS: lease, fence. ARGV: node, ttl ms. Returns {1, token} when taken,
// {0, holder value} when another node holds it.
var acquireScript = redis.NewScript(`
local held = redis.call('GET', KEYS[1])
if held then
  local sp = string.find(held, ' ', 1, true)
  if not sp or string.sub(held, sp + 1) ~= ARGV[1] then return {0, held} end
end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], tok .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {1, tostring(tok)}
`)

// renewScript extends a lease that the caller still holds.
// KEYS: lease. ARGV: "token node", ttl ms. Returns 1 if renewed.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// releaseScript drops a lease that the caller still holds.
// KEYS: lease. ARGV: "token node".
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// heartbeatScript records a node as alive until Redis's own clock plus the
// TTL, so the nodes' clocks do not matter.
// KEYS: nodes (hash id → JSON), expiries (hash id → ms). ARGV: id, JSON, ttl ms.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[3]))
return now
`)

// nodesScript returns the nodes whose heartbeat has not expired by Redis's
// clock: id, JSON, id, JSON...
// KEYS: nodes, expiries.
var nodesScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = redis.call('HGETALL', KEYS[2])
local out = {}
for i = 1, #exp, 2 do
  if tonumber(exp[i + 1]) > now then
    local v = redis.call('HGET', KEYS[1], exp[i])
    if v then
      out[#out + 1] = exp[i]
      out[#out + 1] = v
    end
  end
end
return out
`)
