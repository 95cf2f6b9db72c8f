// cocogan serve: a tiled viewer of a COCO-GAN run. Only the tiles on screen are requested; the
// server generates just the micro patches under each tile. Plain ES2017, no build step.
"use strict";

const ZOOMS = [0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16];
const MIN_TILE_CSS = 128; // request bigger tiles when zoomed out, so the tile count stays small
const $ = (id) => document.getElementById(id);

const state = {
  runs: [], run: null, zoom: 4, offsetX: 0, offsetY: 0,
  seed: 0, seed2: 1, t: 0, z: null, // z: base64url latent from patch inspiration, else null
  tiles: new Map(), tileSize: 32, generation: 0,
  loaded: 0, failed: 0, firstTileMs: null, changeStart: 0,
  upload: null, uploadImage: null,
};
window.cocogan = state; // read by the browser test and handy in the console

async function main() {
  const response = await fetch("/api/runs");
  state.runs = await response.json();
  const select = $("run");
  state.runs.forEach((run) => {
    const option = document.createElement("option");
    option.value = run.id;
    option.textContent = `${run.name} (${run.preset}, ${run.cyclic ? "panorama" : "cartesian"})`;
    select.appendChild(option);
  });
  select.addEventListener("change", () => selectRun(Number(select.value)));
  bindControls();
  bindViewer();
  selectRun(0);
}

function selectRun(id) {
  const run = state.runs[id];
  state.run = run;
  state.z = null;
  state.picked = null;
  $("back").disabled = true;
  $("run-info").textContent = `${run.height}×${run.width} px, ${run.micro}-px micro patches, ` +
    `step ${run.step}` + (run.cyclic ? ", cylindrical: turns around without end" : "");
  $("inspire").hidden = !run.content_loss; // inspiration needs D's content head trained (L_C)
  // Beyond-boundary generation only where the run was fine-tuned for it, or on request.
  $("beyond").checked = run.extrapolate > 0;
  $("inspire-note").textContent = "";
  clearSource();
  home();
}

// ---- geometry ------------------------------------------------------------------------------
function fitZoom() { // the largest zoom at which the whole trained image fits the viewer
  const viewer = $("viewer");
  const run = state.run;
  const fits = ZOOMS.filter((z) => run.width * z <= viewer.clientWidth &&
    run.height * z <= viewer.clientHeight);
  return fits.length ? fits[fits.length - 1] : ZOOMS[0];
}

function beyond() { return $("beyond").checked; }

function home() {
  const viewer = $("viewer");
  state.zoom = fitZoom();
  state.offsetX = Math.round((viewer.clientWidth - state.run.width * state.zoom) / 2);
  state.offsetY = Math.round((viewer.clientHeight - state.run.height * state.zoom) / 2);
  rebuild();
}

function requestTileSize() {
  // The run's tile times a power of two, so a panorama's turn stays a whole number of tiles.
  const run = state.run;
  let size = run.tile;
  // Without beyond-boundary tiles the image must stay a whole number of tiles.
  while (size * state.zoom < MIN_TILE_CSS && size * 2 <= run.max_tile &&
         (!run.cyclic || run.width % (size * 2) === 0) &&
         (beyond() || (run.height % (size * 2) === 0 && run.width % (size * 2) === 0)) &&
         (run.cyclic || size * 2 <= Math.max(run.height, run.width) * 4)) {
    size *= 2;
  }
  return size;
}

function tileRange() {
  const viewer = $("viewer");
  const run = state.run;
  const span = state.tileSize * state.zoom;
  let y0 = Math.floor(-state.offsetY / span);
  let y1 = Math.floor((viewer.clientHeight - state.offsetY - 1) / span);
  let x0 = Math.floor(-state.offsetX / span);
  let x1 = Math.floor((viewer.clientWidth - state.offsetX - 1) / span);
  const reach = beyond() ? run.reach : 0;
  const reachTiles = (extent) => [Math.ceil(-reach / state.tileSize),
    Math.floor((extent + reach) / state.tileSize) - 1];
  const [ylo, yhi] = reachTiles(run.height);
  y0 = Math.max(y0, ylo); y1 = Math.min(y1, yhi);
  if (!run.cyclic) {
    const [xlo, xhi] = reachTiles(run.width);
    x0 = Math.max(x0, xlo); x1 = Math.min(x1, xhi);
  }
  return { y0, y1, x0, x1 };
}

function latentQuery() {
  if (state.z) return `z=${state.z}`;
  let query = `seed=${state.seed}`;
  if (state.t > 0) query += `&seed2=${state.seed2}&t=${state.t}`;
  return query;
}

function tileUrl(y, x) {
  const run = state.run;
  let col = x;
  if (run.cyclic) { // the same pixels one turn later: the same URL, so the browser cache hits
    const turn = run.width / state.tileSize;
    col = ((x % turn) + turn) % turn;
  }
  return `/api/runs/${run.id}/tile?y=${y}&x=${col}&size=${state.tileSize}&${latentQuery()}` +
    `&v=${run.version}`;
}

// ---- drawing -------------------------------------------------------------------------------
function forget(img) { // a tile off screen: abort its request, so the server drops its work
  img.onload = img.onerror = null;
  img.removeAttribute("src");
  img.remove();
}

function rebuild() { // zoom, run or tile size changed: start from an empty layer
  state.tiles.forEach(forget);
  state.tiles.clear();
  state.tileSize = requestTileSize();
  latentChanged();
}

function latentChanged() {
  state.generation += 1;
  state.firstTileMs = null;
  state.changeStart = performance.now();
  state.tiles.forEach((img, key) => {
    const [y, x] = key.split(",").map(Number);
    load(img, y, x);
  });
  draw();
}

function load(img, y, x) {
  const generation = state.generation;
  img.dataset.generation = generation;
  img.onload = () => {
    state.loaded += 1;
    if (generation === state.generation && state.firstTileMs === null) {
      state.firstTileMs = performance.now() - state.changeStart;
    }
    showStatus();
  };
  img.onerror = () => {
    state.failed += 1;
    showStatus(`a tile failed to load (y=${y}, x=${x}); retrying`);
    setTimeout(() => { if (img.isConnected && generation === state.generation) load(img, y, x); },
      1000);
  };
  img.src = tileUrl(y, x);
}

function draw() {
  const run = state.run;
  const { y0, y1, x0, x1 } = tileRange();
  const span = state.tileSize * state.zoom;
  const layer = $("layer");
  layer.style.transform = `translate(${state.offsetX}px, ${state.offsetY}px)`;
  const wanted = new Set();
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const key = `${y},${x}`;
      wanted.add(key);
      if (state.tiles.has(key)) continue;
      const img = document.createElement("img");
      img.alt = "";
      img.draggable = false;
      img.style.left = `${x * span}px`;
      img.style.top = `${y * span}px`;
      img.style.width = img.style.height = `${span}px`;
      state.tiles.set(key, img);
      load(img, y, x);
      layer.appendChild(img);
    }
  }
  state.tiles.forEach((img, key) => {
    if (!wanted.has(key)) { forget(img); state.tiles.delete(key); }
  });
  drawBorder(x0, x1, span);
  drawPicked();
  drawGrid();
  drawNotice(y0, y1, x0, x1);
  $("zoom-value").textContent = `${state.zoom}×`;
  showStatus();
}

function drawBorder(x0, x1, span) {
  const border = $("border");
  const run = state.run;
  const left = run.cyclic ? x0 * span : 0;
  const width = run.cyclic ? (x1 - x0 + 1) * span : run.width * state.zoom;
  Object.assign(border.style, { left: `${left}px`, top: "0px", width: `${width}px`,
    height: `${run.height * state.zoom}px` });
  border.style.outlineStyle = "dashed";
  if (run.cyclic) border.style.clipPath = "inset(-4px 0)"; // top and bottom edges only
  else border.style.clipPath = "none";
}

function drawPicked() { // the estimated macro position of an inspiration
  const picked = $("picked");
  picked.hidden = !state.picked;
  if (!state.picked) return;
  const run = state.run;
  Object.assign(picked.style, { top: `${state.picked.top * state.zoom}px`,
    left: `${state.picked.left * state.zoom}px`, width: `${run.macro[1] * state.zoom}px`,
    height: `${run.macro[0] * state.zoom}px` });
}

function drawGrid() {
  const overlay = $("grid-overlay");
  const run = state.run;
  overlay.hidden = !$("grid").checked;
  const step = run.micro * state.zoom;
  overlay.style.backgroundSize = `${step}px ${step}px`;
  // Without beyond-boundary tiles the grid covers the trained image only (all turns of a
  // panorama); the grid pattern stays anchored to the image's top-left pixel.
  const box = beyond() ? { left: 0, top: 0, right: null, bottom: null } : {
    left: run.cyclic ? 0 : Math.max(0, state.offsetX),
    top: Math.max(0, state.offsetY),
    right: run.cyclic ? null : state.offsetX + run.width * state.zoom,
    bottom: state.offsetY + run.height * state.zoom,
  };
  const viewer = $("viewer");
  const right = box.right === null ? viewer.clientWidth : Math.min(viewer.clientWidth, box.right);
  const bottom = box.bottom === null ? viewer.clientHeight :
    Math.min(viewer.clientHeight, box.bottom);
  Object.assign(overlay.style, { left: `${box.left}px`, top: `${box.top}px`,
    width: `${Math.max(0, right - box.left)}px`, height: `${Math.max(0, bottom - box.top)}px`,
    backgroundPosition: `${state.offsetX - box.left}px ${state.offsetY - box.top}px` });
}

function drawNotice(y0, y1, x0, x1) {
  const run = state.run;
  const size = state.tileSize;
  const outside = y0 * size < 0 || (y1 + 1) * size > run.height ||
    (!run.cyclic && (x0 * size < 0 || (x1 + 1) * size > run.width));
  const tuned = run.extrapolate ? `This run was fine-tuned for it (extrapolate=${run.extrapolate}).`
    : "This run was NOT fine-tuned for it (train.extrapolate=0), so expect it to degrade.";
  let text = "";
  if (outside) { // tiles past the border are on screen (only requested when beyond() is on)
    text = "Outside the dashed border: beyond-boundary generation (coordinates past [-1, 1]). ";
    text += tuned;
  }
  $("notice").textContent = text;
}

function showStatus(extra) {
  const run = state.run;
  const viewer = $("viewer");
  const count = state.tiles.size;
  let text = `${count} tile${count === 1 ? "" : "s"} of ${state.tileSize} px on screen`;
  if (state.firstTileMs !== null) text += `, first tile in ${Math.round(state.firstTileMs)} ms`;
  if (run.cyclic) {
    const centre = (viewer.clientWidth / 2 - state.offsetX) / state.zoom; // image pixels
    const degrees = centre / run.width * 360;
    const angle = ((degrees % 360) + 360) % 360;
    text += `; view centre ${angle.toFixed(1)}°, turn ${Math.floor(degrees / 360)}`;
  }
  text += state.z ? "; latent: inspired by the uploaded patch" :
    `; seed ${state.seed}` + (state.t > 0 ? ` → ${state.seed2} at t = ${state.t}` : "");
  $("status").textContent = extra ? `${text}. ${extra}` : text;
}

// ---- interaction ---------------------------------------------------------------------------
function panBy(dx, dy) {
  state.offsetX += Math.round(dx);
  state.offsetY += Math.round(dy);
  draw();
}

function zoomTo(index, cx, cy) {
  const viewer = $("viewer");
  const next = ZOOMS[Math.max(0, Math.min(ZOOMS.length - 1, index))];
  cx = cx === undefined ? viewer.clientWidth / 2 : cx;
  cy = cy === undefined ? viewer.clientHeight / 2 : cy;
  // keep the image pixel under (cx, cy) in place
  state.offsetX = Math.round(cx - (cx - state.offsetX) * next / state.zoom);
  state.offsetY = Math.round(cy - (cy - state.offsetY) * next / state.zoom);
  state.zoom = next;
  rebuild();
}

function zoomStep(delta, cx, cy) {
  zoomTo(ZOOMS.indexOf(state.zoom) + delta, cx, cy);
}

function bindViewer() {
  const viewer = $("viewer");
  let start = null; // measured from the drag's start, so rounding never accumulates
  viewer.addEventListener("pointerdown", (event) => {
    start = { x: event.clientX, y: event.clientY, ox: state.offsetX, oy: state.offsetY };
    viewer.setPointerCapture(event.pointerId);
    viewer.classList.add("dragging");
  });
  viewer.addEventListener("pointermove", (event) => {
    if (!start) return;
    state.offsetX = start.ox + Math.round(event.clientX - start.x);
    state.offsetY = start.oy + Math.round(event.clientY - start.y);
    draw();
  });
  const stop = () => { start = null; viewer.classList.remove("dragging"); };
  viewer.addEventListener("pointerup", stop);
  viewer.addEventListener("pointercancel", stop);
  viewer.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = viewer.getBoundingClientRect();
    if (event.ctrlKey) {
      zoomStep(event.deltaY < 0 ? 1 : -1, event.clientX - box.left, event.clientY - box.top);
    } else if (event.shiftKey) {
      panBy(-event.deltaY, 0);
    } else {
      panBy(-event.deltaX, -event.deltaY);
    }
  }, { passive: false });
  viewer.addEventListener("keydown", (event) => {
    const step = 40;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step],
      ArrowDown: [0, -step] };
    if (moves[event.key]) { event.preventDefault(); panBy(...moves[event.key]); }
    if (event.key === "+" || event.key === "=") zoomStep(1);
    if (event.key === "-") zoomStep(-1);
  });
  window.addEventListener("resize", () => { if (state.run) draw(); });
}

function readSeed(input) {
  const value = Number(input.value);
  if (!Number.isInteger(value) || value < 0 || value > 2147483647) {
    input.setCustomValidity("a whole number from 0 to 2147483647");
    input.reportValidity();
    return null;
  }
  input.setCustomValidity("");
  return value;
}

function bindControls() {
  const seedChanged = () => {
    const seed = readSeed($("seed"));
    const seed2 = readSeed($("seed2"));
    if (seed === null || seed2 === null) return;
    state.seed = seed; state.seed2 = seed2; state.z = null; state.picked = null;
    $("back").disabled = true;
    latentChanged();
  };
  $("seed").addEventListener("change", seedChanged);
  $("seed2").addEventListener("change", seedChanged);
  $("random").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * 1000000);
    seedChanged();
  });
  $("blend").addEventListener("input", () => {
    state.t = Number($("blend").value);
    $("blend-value").textContent = `t = ${state.t}`;
    if (!state.z) latentChanged();
  });
  $("zoom-in").addEventListener("click", () => zoomStep(1));
  $("zoom-out").addEventListener("click", () => zoomStep(-1));
  $("home").addEventListener("click", home);
  $("grid").addEventListener("change", drawGrid);
  $("beyond").addEventListener("change", rebuild);
  $("upload").addEventListener("change", uploadChosen);
  $("source").addEventListener("click", patchPicked);
  $("back").addEventListener("click", seedChanged);
}

// ---- patch-inspired generation --------------------------------------------------------------
function clearSource() {
  const canvas = $("source");
  canvas.width = canvas.height = 0;
  state.upload = null;
  state.uploadImage = null;
  $("upload").value = "";
}

const SOURCE_SCALE = () => Math.max(1, Math.floor(256 / state.run.height));

async function uploadChosen() {
  const file = $("upload").files[0];
  if (!file) return;
  try {
    state.uploadImage = await createImageBitmap(file);
  } catch (error) {
    $("inspire-note").textContent = "This file is not an image the browser can read.";
    return;
  }
  state.upload = file;
  drawSource();
  $("inspire-note").textContent = "Now click a macro patch on the image.";
}

function drawSource(pick, estimate) {
  const run = state.run;
  const scale = SOURCE_SCALE();
  const canvas = $("source");
  canvas.width = run.width * scale;
  canvas.height = run.height * scale;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = true;
  context.drawImage(state.uploadImage, 0, 0, canvas.width, canvas.height);
  const box = (top, left, colour) => {
    context.strokeStyle = colour;
    context.lineWidth = 2;
    for (const shift of run.cyclic ? [0, -run.width, run.width] : [0]) {
      context.strokeRect((left + shift) * scale + 1, top * scale + 1,
        run.macro[1] * scale - 2, run.macro[0] * scale - 2);
    }
  };
  if (pick) box(pick.top, pick.left, "#ff2020");
  if (estimate) box(estimate.top, estimate.left, "#0060ff");
}

async function patchPicked(event) {
  const run = state.run;
  if (!state.upload) return;
  const scale = SOURCE_SCALE();
  const rect = $("source").getBoundingClientRect();
  const snap = (value, size, limit) => {
    const cell = Math.floor(value / scale / run.micro) * run.micro - Math.floor(size / 2 /
      run.micro) * run.micro;
    return Math.max(0, Math.min(limit - size, cell));
  };
  const top = snap(event.clientY - rect.top, run.macro[0], run.height);
  let left = snap(event.clientX - rect.left, run.macro[1], run.width);
  if (run.cyclic) left = ((left % run.width) + run.width) % run.width;
  const response = await fetch(`/api/runs/${run.id}/inspire?top=${top}&left=${left}`,
    { method: "POST", body: state.upload, headers: { "Content-Type": "application/octet-stream" } });
  const result = await response.json();
  if (!response.ok) {
    $("inspire-note").textContent = `The server refused the image: ${result.error}`;
    return;
  }
  state.z = result.z;
  $("back").disabled = false;
  drawSource({ top, left }, result);
  state.picked = { top: result.top, left: result.left };
  $("inspire-note").textContent = `Red: your patch. Blue: where the discriminator places it ` +
    `(macro row ${result.row}, column ${result.col}); the viewer shows the image generated ` +
    `from its latent estimate.` + (result.warning ? ` Warning: ${result.warning}` : "");
  latentChanged();
}

main().catch((error) => { $("status").textContent = `Could not load the runs: ${error}`; });
