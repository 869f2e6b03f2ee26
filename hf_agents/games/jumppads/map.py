"""The JumpPads map: a tile layout turned into a UDMF (ZDoom namespace) WAD by project code.

Each non-void tile becomes one square sector; edges between two tiles are two-sided lines, edges
to the void are walls. ZDoom builds the nodes itself, so no external tool is needed.
One map lump per (visual variant, spawn): spawns are chosen with `set_doom_map`.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

TILE = 64  # map units per tile (the player is 32 wide)
PIT_DEPTH = -384
FALL_Z = -48.0  # below this the player has fallen into a pit
BLOCK_HEIGHT = 96  # higher than a step (24) or a jump

# Launch island, north up. '#' wall (outer), 'b' block (raised, impassable), '.' floor, 'p' pit (falling
# in fails the episode), 'L'/'M'/'R' jumppads, '1'-'4' spawns. Two bridges, three tiles wide (they were two: agents
# at 64 px fell off their edges in most failed episodes). The pit band has no bridge on the right, and
# a block sits in front of the right pad, so from the right-hand spawns the right pad takes a detour across
# the middle bridge and back (the paper's spawn imbalance); heading straight at it ends in the pit.
LAUNCH_ISLAND = [
    "##################",
    "#pLLL..MMM...RRRp#",
    "#pLLL..MMM...RRRp#",
    "#p...........bbbp#",
    "#p...bb......bbbp#",
    "#p...bb......bbbp#",
    "#p..............p#",
    "#p...pp...ppppppp#",
    "#p...pp...ppppppp#",
    "#p...pp...ppppppp#",
    "#p..............p#",
    "#p..bb......bb..p#",
    "#p..bb......bb..p#",
    "#p..............p#",
    "#p.1...2..3...4.p#",
    "#p..............p#",
    "#pppppppppppppppp#",
    "##################",
]
# Main island (general play after a launch): open ground, pillars and pits; 'T' is where a launch lands.
MAIN_ISLAND = [
    "################",
    "#pppppppppppppp#",
    "#p............p#",
    "#p..bb....pp..p#",
    "#p..bb....pp..p#",
    "#p............p#",
    "#p......T.....p#",
    "#p.pp.........p#",
    "#p.pp....bb...p#",
    "#p.......bb...p#",
    "#p............p#",
    "#pppppppppppppp#",
    "################",
]
MAIN_OFFSET = (40 * TILE, 0)  # far from the launch island; only a teleport gets there
PADS = ("left", "middle", "right")
PAD_TILES = {"L": "left", "M": "middle", "R": "right"}
PAD_LIGHT = {"left": "ff3030", "middle": "30ff30", "right": "3060ff"}
PAD_WALL = {"left": "LITERED", "middle": "LITEGRN1", "right": "LITEBLU1"}
PAD_FLOOR = {"left": "FLAT5_3", "middle": "GATE1", "right": "FWATER1"}
PAD_COLOURS = {"left": "#d62728", "middle": "#2ca02c", "right": "#1f4fd6"}  # in figures
NUM_SPAWNS = 4


@dataclass(frozen=True)
class Variant:
    """A visual variant (the paper's 'characters'): textures, light and player colour."""

    wall: str
    floor: str
    light: int
    player_color: str  # "rr gg bb" for ZDoom's color cvar


VARIANTS: dict[str, Variant] = {
    "ninja": Variant("STONE2", "FLOOR0_1", 200, "20 20 20"),  # the default evaluation look
    "pirate": Variant("WOOD1", "FLAT5_2", 176, "c0 30 20"),
    "knight": Variant("GSTONE1", "FLOOR4_8", 192, "c0 c0 c0"),
    "robot": Variant("METAL1", "FLOOR5_1", 224, "40 90 ff"),
    "ghost": Variant("MARBLE1", "FLAT1", 144, "e0 e0 ff"),
    "viking": Variant("BROWN1", "GRASS1", 208, "d0 a0 20"),
}
DEFAULT_VARIANT = "ninja"


def _grid(rows: list[str]) -> list[str]:
    width = len(rows[0])
    assert all(len(r) == width for r in rows), [len(r) for r in rows]
    return rows[::-1]  # row 0 = south


def tile_centre(col: int, row: int, offset=(0, 0)) -> tuple[float, float]:
    return offset[0] + (col + 0.5) * TILE, offset[1] + (row + 0.5) * TILE


class IslandLayout:
    """Tile queries on an island: spawns, pads, walkable tiles and shortest paths."""

    def __init__(self, rows=LAUNCH_ISLAND, offset=(0, 0)):
        self.rows = _grid(rows)
        self.offset = offset
        self.h, self.w = len(self.rows), len(self.rows[0])
        self.spawns = sorted(((c, r) for r in range(self.h) for c in range(self.w) if self.rows[r][c].isdigit()),
                             key=lambda cr: self.rows[cr[1]][cr[0]])
        self.pad_tiles = {name: [(c, r) for r in range(self.h) for c in range(self.w) if self.rows[r][c] == k]
                          for k, name in PAD_TILES.items()}

    def tiles(self, kind: str) -> list[tuple[int, int]]:
        """(col, row) of every tile of one kind, e.g. "T" (where a launch lands)."""
        return [(c, r) for r in range(self.h) for c in range(self.w) if self.rows[r][c] == kind]

    def walkable(self, col, row) -> bool:
        return 0 <= col < self.w and 0 <= row < self.h and self.rows[row][col] not in "#pb"

    def tile_of(self, x: float, y: float) -> tuple[int, int]:
        return int((x - self.offset[0]) // TILE), int((y - self.offset[1]) // TILE)

    def centre(self, col: int, row: int) -> tuple[float, float]:
        return tile_centre(col, row, self.offset)

    def tile_at(self, x: float, y: float) -> str:
        col, row = self.tile_of(x, y)
        if 0 <= col < self.w and 0 <= row < self.h:
            return self.rows[row][col]
        return "#"

    def pad_at(self, x: float, y: float) -> str | None:
        return PAD_TILES.get(self.tile_at(x, y))

    def walkable_tiles(self) -> list[tuple[int, int]]:
        return [(c, r) for r in range(self.h) for c in range(self.w) if self.walkable(c, r)]

    def near_pit(self, col: int, row: int, radius: int = 1) -> bool:
        return any(0 <= row + dr < self.h and 0 <= col + dc < self.w and self.rows[row + dr][col + dc] == "p"
                   for dc in range(-radius, radius + 1) for dr in range(-radius, radius + 1))

    def distances_to(self, targets, edge_penalty: float = 0.0) -> np.ndarray:
        """Path cost in tiles (8-connected, no corner cutting) from every tile to the nearest target tile.

        `targets` is a pad name or a list of (col, row) tiles; `edge_penalty` is added for entering a tile
        next to a pit, so that paths keep off pit edges and cross bridges straight.
        """
        dist = np.full((self.h, self.w), np.inf)
        queue = deque()
        for c, r in (self.pad_tiles[targets] if isinstance(targets, str) else targets):
            dist[r, c] = 0
            queue.append((c, r))
        while queue:
            c, r = queue.popleft()
            for dc, dr in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
                nc, nr = c + dc, r + dr
                step = (1.414 if dc and dr else 1.0) + (edge_penalty if self.near_pit(c, r) else 0.0)
                if not self.walkable(nc, nr) or dist[nr, nc] <= dist[r, c] + step:
                    continue
                if dc and dr and not (self.walkable(c + dc, r) and self.walkable(c, r + dr)):
                    continue  # no cutting corners past walls or pits
                dist[nr, nc] = dist[r, c] + step
                queue.append((nc, nr))
        return dist


# -- UDMF -------------------------------------------------------------------------------------
def _udmf(variant: Variant, spawn: int, pads_look_alike: bool = False) -> str:
    out = ['namespace = "zdoom";']
    vertices: dict[tuple[int, int], int] = {}
    sectors, sides, lines = [], [], []
    tiles: dict[tuple[int, int], int] = {}  # world tile (x, y) -> sector index
    kinds: dict[tuple[int, int], str] = {}
    launch = IslandLayout()

    def vertex(x, y):
        if (x, y) not in vertices:
            vertices[(x, y)] = len(vertices)
            out.append(f"vertex {{ x = {x:.1f}; y = {y:.1f}; }}")
        return vertices[(x, y)]

    for rows, offset in ((LAUNCH_ISLAND, (0, 0)), (MAIN_ISLAND, MAIN_OFFSET)):
        grid = _grid(rows)
        for r, line in enumerate(grid):
            for c, k in enumerate(line):
                if k == "#":
                    continue
                key = (offset[0] // TILE + c, offset[1] // TILE + r)
                pad = PAD_TILES.get(k)
                floor = PIT_DEPTH if k == "p" else (8 if pad else (BLOCK_HEIGHT if k == "b" else 0))
                # Pits open onto the sky (a bottomless look) and their walls are dark: easy to see from afar.
                look = "middle" if pads_look_alike else pad  # look-alike: every pad wears the middle pad's look
                flat = PAD_FLOOR[look] if pad else ("F_SKY1" if k == "p" else variant.floor)
                light = 255 if pad else (48 if k == "p" else variant.light)
                color = f' lightcolor = 0x{PAD_LIGHT[look]};' if pad else ""
                tiles[key] = len(sectors)
                kinds[key] = k
                sectors.append(f'sector {{ heightfloor = {floor}; heightceiling = 512; texturefloor = "{flat}"; '
                               f'textureceiling = "F_SKY1"; lightlevel = {light};{color} }}')
    for (tx, ty), s in tiles.items():
        x0, y0, x1, y1 = tx * TILE, ty * TILE, (tx + 1) * TILE, (ty + 1) * TILE
        # Clockwise edges keep this tile on each line's front (right-hand) side.
        for (ax, ay), (bx, by), n in (((x0, y0), (x0, y1), (tx - 1, ty)), ((x0, y1), (x1, y1), (tx, ty + 1)),
                                      ((x1, y1), (x1, y0), (tx + 1, ty)), ((x1, y0), (x0, y0), (tx, ty - 1))):
            other = tiles.get(n)
            if other is not None and other < s:
                continue  # the shared edge was written from the other tile
            pad = PAD_TILES.get(kinds[(tx, ty)])
            wall = PAD_WALL[pad] if pad else variant.wall
            front = len(sides)
            sides.append(f'sidedef {{ sector = {s}; texturemiddle = "{wall if other is None else "-"}"; '
                         f'texturetop = "{wall}"; texturebottom = "{wall}"; }}')
            if other is None:
                lines.append(f"linedef {{ v1 = {vertex(ax, ay)}; v2 = {vertex(bx, by)}; sidefront = {front}; "
                             "blocking = true; }")
            else:
                opad = PAD_TILES.get(kinds[n])
                owall = PAD_WALL[opad] if opad else variant.wall
                sides.append(f'sidedef {{ sector = {other}; texturemiddle = "-"; texturetop = "{owall}"; '
                             f'texturebottom = "{owall}"; }}')
                lines.append(f"linedef {{ v1 = {vertex(ax, ay)}; v2 = {vertex(bx, by)}; sidefront = {front}; "
                             f"sideback = {front + 1}; twosided = true; }}")
    sx, sy = tile_centre(*launch.spawns[spawn])
    things = [f"thing {{ x = {sx:.1f}; y = {sy:.1f}; angle = 90; type = 1; skill1 = true; skill2 = true; "
              "skill3 = true; skill4 = true; skill5 = true; single = true; }"]
    return "\n".join([out[0], *things, *out[1:], *sides, *lines, *sectors]) + "\n"


def map_name(variant: str, spawn: int) -> str:
    return f"MAP{list(VARIANTS).index(variant) * NUM_SPAWNS + spawn + 1:02d}"


def write_wad(path, pads_look_alike: bool = False) -> None:
    """All (variant, spawn) maps in one PWAD; `pads_look_alike`: the three pads share one look (only where a pad
    is tells it apart)."""
    lumps: list[tuple[str, bytes]] = []
    for name, variant in VARIANTS.items():
        for spawn in range(NUM_SPAWNS):
            lumps += [(map_name(name, spawn), b""), ("TEXTMAP", _udmf(variant, spawn, pads_look_alike).encode()), ("ENDMAP", b"")]
    data, directory, offset = b"", b"", 12
    for name, body in lumps:
        directory += struct.pack("<ii8s", offset, len(body), name.encode())
        data += body
        offset += len(body)
    with open(path, "wb") as f:
        f.write(struct.pack("<4sii", b"PWAD", len(lumps), offset) + data + directory)
