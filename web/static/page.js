// What the chat and canvas pages share: the join form with ?room= and
// ?name=, one user id per tab, and the token the page was opened with.

export const $ = (id) => document.getElementById(id);

// userId is this tab's user, kept across reloads: a reconnect is the same user.
export const userId = (() => {
  let id = sessionStorage.getItem("roomgate.user");
  if (!id) {
    id = "u-" + crypto.randomUUID().slice(0, 8);
    sessionStorage.setItem("roomgate.user", id);
  }
  return id;
})();

// token is the client token the page was opened with (?token=), or null.
// It is kept for the tab in sessionStorage and taken out of the address
// bar at once, so it does not linger in the history, a bookmark, a shared
// link or a Referer, and a reload still has it. With a key configured the
// server takes the user and name from it, and ignores ?name=.
export const token = (() => {
  const params = new URLSearchParams(location.search);
  const fromURL = params.get("token");
  if (fromURL) {
    sessionStorage.setItem("roomgate.token", fromURL);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  return sessionStorage.getItem("roomgate.token");
})();

// tokenClaims are the token's claims, or null. The signature is the
// server's business; the page only reads who the token says it is.
function tokenClaims() {
  if (!token) return null;
  try {
    return JSON.parse(new TextDecoder().decode(
      Uint8Array.from(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

// selfId is the user id the server gives this tab: the token's sub with a
// token, the tab's own id (sent as ?user=) in dev mode.
export const selfId = (() => {
  const sub = tokenClaims()?.sub;
  return typeof sub === "string" && sub ? sub : userId;
})();

// tokenName is the name the token claims (its name, else its sub): the
// server names the user after it, so the form shows it.
function tokenName() {
  const claims = tokenClaims();
  return [claims?.name, claims?.sub].find((v) => typeof v === "string" && v) ?? null;
}

// The server refuses a name over 64 bytes of UTF-8 (400); maxlength counts
// UTF-16 units, so a name of emoji passes it.
const nameBytes = 64;
function checkName() {
  const over = new TextEncoder().encode($("name").value.trim()).length > nameBytes;
  $("name").setCustomValidity(over ? `At most ${nameBytes} bytes: use a shorter name.` : "");
}

// setupJoin fills the join form from ?room= and ?name= (or the token's
// name, or the last name used), calls join(name, room) when it is sent,
// and joins at once when the URL names both (or the room, with a token
// that names the user). A room or user name the server would refuse (400)
// is reported instead: the socket would only ever reconnect.
export function setupJoin(join) {
  const params = new URLSearchParams(location.search);
  const claimed = tokenName();
  $("name").value = params.get("name") ?? claimed ?? localStorage.getItem("roomgate.name") ?? "";
  if (params.get("room")) $("room").value = params.get("room");
  $("name").addEventListener("input", checkName);
  checkName();
  const go = (name, room) => {
    localStorage.setItem("roomgate.name", name);
    history.replaceState(null, "", `?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`);
    join(name, room);
  };
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    go($("name").value.trim(), $("room").value.trim());
  });
  if ((params.get("name") && $("room").value) || (claimed && params.get("room"))) {
    if ($("room").checkValidity() && $("name").checkValidity()) go($("name").value.trim(), $("room").value);
    else $("join-form").reportValidity();
  }
}
