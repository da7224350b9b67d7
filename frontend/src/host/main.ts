import { sessionURL } from "./origins";

// The host page: a grid of tiles, each a frame holding an independent chat
// session, and a last tile that opens another.

function byId(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (el === null) {
    throw new Error(`the host page lacks #${id}`);
  }
  return el;
}

const tiles = byId("tiles");
const newTile = byId("new-tile");
const newButton = byId("new-window");
let opened = 0;

/** openSession adds a tile holding a new session frame. */
function openSession(): void {
  opened += 1;
  const tile = document.createElement("li");
  tile.className = "tile";
  const frame = document.createElement("iframe");
  frame.className = "tile__frame";
  frame.title = `Chat session ${opened}`;
  frame.dataset.session = String(opened);
  frame.src = sessionURL(opened, window.location);
  tile.append(frame);
  tiles.insertBefore(tile, newTile);
}

newButton.addEventListener("click", () => {
  openSession();
  newButton.scrollIntoView({ behavior: "smooth", block: "nearest" });
});

openSession();
