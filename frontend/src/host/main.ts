import { sessionURL } from "./origins";

// The host page: a grid of tiles, each a frame holding an independent chat
// session, and a last tile that opens another.

const tiles = document.getElementById("tiles");
const newTile = document.getElementById("new-tile");
const newButton = document.getElementById("new-window");
if (tiles === null || newTile === null || newButton === null) {
  throw new Error("the host page lacks #tiles, #new-tile or #new-window");
}

let opened = 0;

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
  tiles?.insertBefore(tile, newTile);
}

newButton.addEventListener("click", () => {
  openSession();
  newButton.scrollIntoView({ behavior: "smooth", block: "nearest" });
});

openSession();
