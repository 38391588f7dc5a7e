"""The built-in sample directory: China's real divisions with a deterministic set of hospitals.

The division tree is read from data/divisions.tsv once per process, on first use, so importing this
module costs nothing. Hospitals are never stored: record i of a leaf is computed on demand
(synth.hospital), so serving a page of a million-hospital directory costs O(page size).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources

from jobs.errors import PermanentUpstreamError
from jobs.upstream import synth
from jobs.upstream.base import LEVELS, Hospital, Region

PAGE_SIZE = 500
FULL_SCALE = 1_000_000
# A leaf city (东莞市) or province (香港) stands for many districts' worth of hospitals.
LEVEL_WEIGHT = {"province": 12, "city": 4, "district": 1}


@dataclass(frozen=True)
class Node:
    code: str
    name: str
    level: str
    parent: str  # "" for a province
    children: tuple[str, ...]

    def region(self) -> Region:
        return Region(code=self.code, name=self.name, level=self.level)


@dataclass(frozen=True)
class Tree:
    nodes: dict[str, Node]
    provinces: tuple[str, ...]
    leaves: tuple[str, ...]  # in walk order: provinces by code, then children by code, depth first


def _parse(text: str) -> dict[str, tuple[str, str]]:
    rows: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            code, parent, name = line.split("\t")
            rows[code] = (parent, name)
    return rows


@functools.cache
def load_tree() -> Tree:
    """The division tree, parsed once per process (about 3,200 lines, a few milliseconds)."""
    source = resources.files("jobs.upstream").joinpath("data/divisions.tsv").read_text(encoding="utf-8")
    rows = _parse(source)
    kids: dict[str, list[str]] = {code: [] for code in rows}
    for code, (parent, _) in rows.items():
        if parent:
            kids[parent].append(code)

    nodes: dict[str, Node] = {}
    leaves: list[str] = []

    def add(code: str, depth: int) -> None:
        children = tuple(sorted(kids[code]))
        parent, name = rows[code]
        nodes[code] = Node(code, name, LEVELS[depth], parent, children)
        if not children:
            leaves.append(code)
        for child in children:
            add(child, depth + 1)

    provinces = tuple(sorted(code for code, (parent, _) in rows.items() if not parent))
    for code in provinces:
        add(code, 0)
    return Tree(nodes, provinces, tuple(leaves))


def _short_name(node: Node) -> str:
    # 香港特别行政区人民医院 reads oddly; hospitals of province-level leaves use the short name.
    for suffix in ("特别行政区", "省"):
        if node.level == "province" and node.name.endswith(suffix):
            return node.name[: -len(suffix)]
    return node.name


def _leaf_info(tree: Tree, code: str) -> synth.Leaf:
    names: list[str] = []
    node: Node | None = tree.nodes[code]
    while node is not None:
        names.append(node.name)
        node = tree.nodes.get(node.parent)
    names.reverse()
    # A municipality's city node repeats its name (北京市北京市东城区): say it once.
    address = "".join(name for i, name in enumerate(names) if i == 0 or name != names[i - 1])
    return synth.Leaf(code=code, place=_short_name(tree.nodes[code]), address=address)


def distribute(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Split `total` in proportion to `weights`, summing exactly to `total` (largest remainder)."""
    weight_sum = sum(weights.values())
    if total == 0 or weight_sum == 0:
        return dict.fromkeys(weights, 0)
    shares = {code: divmod(total * weight, weight_sum) for code, weight in weights.items()}
    counts = {code: share for code, (share, _) in shares.items()}
    left = total - sum(counts.values())
    # Ties broken by code so the split never depends on dict order.
    for code in sorted(shares, key=lambda c: (-shares[c][1], c))[:left]:
        counts[code] += 1
    return counts


def _weight(node: Node) -> int:
    return LEVEL_WEIGHT[node.level] * (50 + synth.mix64(int(node.code)) % 100)


class SampleDirectory:
    """The Upstream of the built-in sample; safe to share between threads (its only mutable state is
    a memo of per-leaf address data, where a race merely computes the same value twice)."""

    def __init__(self, scale: int = FULL_SCALE, id_format: str = "coded") -> None:
        """`id_format`: "coded" ids carry their leaf's code (H110101000123), "opaque" ones are uuid-shaped
        (see synth.ID_FORMATS); the same scale gives the same records either way, only the ids differ."""
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        if id_format not in synth.ID_FORMATS:
            raise ValueError(f"id_format must be one of {', '.join(synth.ID_FORMATS)}, got {id_format!r}")
        self.scale = scale
        self.id_format = id_format
        self._tree = load_tree()
        weights = {code: _weight(self._tree.nodes[code]) for code in self._tree.leaves}
        self._counts = distribute(scale, weights)
        self._leaf_info: dict[str, synth.Leaf] = {}

    def __repr__(self) -> str:
        return f"SampleDirectory(scale={self.scale}, id_format={self.id_format!r})"

    # -- the Upstream protocol -------------------------------------------------------------------

    def provinces(self) -> list[Region]:
        return [self._tree.nodes[code].region() for code in self._tree.provinces]

    def children(self, region: Region) -> list[Region]:
        node = self._node(region["code"])
        return [self._tree.nodes[code].region() for code in node.children]

    def hospitals(self, region: Region) -> list[Hospital]:
        code = region["code"]
        total = self.hospital_count(code) if not self._node(code).children else 0
        return self._hospital_range(code, 0, total)

    def close(self) -> None:
        """Nothing to release: the sample holds no connections."""

    # -- helpers for the server, the benchmarks and the tests ------------------------------------

    def find_region(self, code: str) -> Region | None:
        node = self._tree.nodes.get(code)
        return node.region() if node else None

    def is_leaf(self, code: str) -> bool:
        return not self._node(code).children

    def leaves(self) -> list[Region]:
        """Every leaf region in walk order."""
        return [self._tree.nodes[code].region() for code in self._tree.leaves]

    def leaf_count(self, code: str) -> int:
        """How many leaf regions the subtree of `code` holds (1 for a leaf)."""
        return self._subtree_sum(code, lambda leaf: 1)

    def hospital_count(self, code: str) -> int:
        """How many hospitals the subtree of `code` holds."""
        return self._subtree_sum(code, lambda leaf: self._counts[leaf])

    def hospital_page(self, code: str, page: int, page_size: int) -> tuple[list[Hospital], int]:
        """Page `page` (1-based) of a region's hospitals and their total; empty for a non-leaf."""
        total = self.hospital_count(code) if self.is_leaf(code) else 0
        start = min((max(page, 1) - 1) * page_size, total)
        return self._hospital_range(code, start, min(start + page_size, total)), total

    def all_hospitals(self) -> Iterator[Hospital]:
        """Every hospital, leaf by leaf in walk order."""
        for code in self._tree.leaves:
            yield from self._hospital_range(code, 0, self._counts[code])

    # -- internals --------------------------------------------------------------------------------

    def _node(self, code: str) -> Node:
        node = self._tree.nodes.get(code)
        if node is None:
            raise PermanentUpstreamError(f"unknown region {code!r}")
        return node

    def _subtree_sum(self, code: str, measure: Callable[[str], int]) -> int:
        stack, found = [self._node(code).code], 0
        while stack:
            node = self._tree.nodes[stack.pop()]
            if node.children:
                stack.extend(node.children)
            else:
                found += measure(node.code)
        return found

    def _hospital_range(self, code: str, start: int, stop: int) -> list[Hospital]:
        info = self._leaf_info.get(code)
        if info is None:
            info = self._leaf_info[code] = _leaf_info(self._tree, code)
        return [synth.hospital(info, index, self.id_format) for index in range(start, stop)]
