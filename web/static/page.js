// What the chat and canvas pages share: the join form with ?room= and
// ?name=, and one user id per tab.

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

// The server refuses a name over 64 bytes of UTF-8 (400); maxlength counts
// UTF-16 units, so a name of emoji passes it.
const nameBytes = 64;
function checkName() {
  const over = new TextEncoder().encode($("name").value.trim()).length > nameBytes;
  $("name").setCustomValidity(over ? `At most ${nameBytes} bytes: use a shorter name.` : "");
}

// setupJoin fills the join form from ?room= and ?name= (or the last name
// used), calls join(name, room) when it is sent, and joins at once when
// the URL names both. A room or user name the server would refuse (400) is
// reported instead: the socket would only ever reconnect.
export function setupJoin(join) {
  const params = new URLSearchParams(location.search);
  $("name").value = params.get("name") ?? localStorage.getItem("roomgate.name") ?? "";
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
  if (params.get("name") && $("room").value) {
    if ($("room").checkValidity() && $("name").checkValidity()) go($("name").value.trim(), $("room").value);
    else $("join-form").reportValidity();
  }
}
