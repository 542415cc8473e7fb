// Package redisstore is the cluster-mode storage.Store and
// storage.Coordinator, on Redis (a single server or a Redis Cluster)
// through go-redis.
//
// Layout: every key of a room carries the hash tag {class/room}, so a
// room lives on one shard and one Lua script can check its fencing token
// and apply its batch atomically:
//
//	rg:{c/r}:kv     hash   key → value
//	rg:{c/r}:keys   zset   the keys, all score 0: ZRANGE BYLEX lists them in byte order
//	rg:{c/r}:mem    hash   socket id → membership record
//	rg:{c/r}:meta   hash   bytes, alarm (unix ns)
//	rg:{c/r}:fence  string the highest fencing token seen
//	rg:{c/r}:lease  string "token node", with the lease's TTL
//	rg:rooms        zset   "class\0room" of rooms that may have data (a superset, pruned on commit)
//	rg:alarms       zset   "class\0room" scored by alarm time in ms (never later than the room's alarm)
//	rg:{nodes}      hash   node id → JSON heartbeat (and rg:{nodes}:exp, id → expiry by Redis's clock)
//
// The two indexes live on their own shards, so they cannot change in the
// room's script; they are kept as supersets that the readers check against
// the room's own keys, which are the truth.
package redisstore
