"""Synthetic hospitals for the sample directory: record number i of a leaf, computed in O(1).

Everything derives from a 64-bit mix of (leaf code, index), never from Python's salted hash(), so
the same scale gives the same hospitals in every process and on every machine.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass

from jobs.upstream.base import Hospital

MASK64 = (1 << 64) - 1

# One cycle of 16 hospitals: general hospitals are the most common, as in the real registry.
CYCLE = (
    ("人民医院", "综合医院"),
    ("中医医院", "中医医院"),
    ("人民医院", "综合医院"),
    ("妇幼保健院", "妇幼保健院"),
    ("人民医院", "综合医院"),
    ("口腔医院", "专科医院"),
    ("中西医结合医院", "中西医结合医院"),
    ("人民医院", "综合医院"),
    ("中医医院", "中医医院"),
    ("眼科医院", "专科医院"),
    ("人民医院", "综合医院"),
    ("肿瘤医院", "专科医院"),
    ("妇幼保健院", "妇幼保健院"),
    ("康复医院", "康复医院"),
    ("中医医院", "中医医院"),
    ("精神卫生中心", "专科医院"),
)
# For each slot of the cycle: how many slots before it share its suffix, and how many share it in all,
# which together give the ordinal (第二, 第三...) of a hospital without counting its predecessors.
RANK = tuple(sum(1 for s, _ in CYCLE[:i] if s == suffix) for i, (suffix, _) in enumerate(CYCLE))
PER_CYCLE = {suffix: sum(1 for s, _ in CYCLE if s == suffix) for suffix, _ in CYCLE}

GRADES = (  # (grade, cumulative percent)
    ("三级甲等", 8),
    ("三级乙等", 12),
    ("二级甲等", 32),
    ("二级乙等", 42),
    ("一级甲等", 60),
    ("一级乙等", 70),
    ("未定级", 100),
)
ROADS = (
    "人民路", "解放路", "中山路", "建设路", "和平路", "新华路", "文化路", "胜利路",
    "朝阳路", "健康路", "长江路", "黄河路", "青年路", "光明路", "团结路", "府前街",
)  # fmt: skip
DIGITS = "零一二三四五六七八九"
# Lookup tables, because a benchmark serves a million of these records.
GRADE_OF_PERCENT = tuple(next(grade for grade, upto in GRADES if p < upto) for p in range(100))
_EPOCH = datetime.date(2025, 1, 1).toordinal()
DAYS = tuple(datetime.date.fromordinal(_EPOCH + d).isoformat() for d in range(365))


def mix64(value: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread, platform-independent hash of an integer."""
    z = (value + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


@functools.lru_cache(maxsize=4096)
def chinese_number(n: int) -> str:
    """1..9999 in Chinese numerals (二十一, 一百零五); larger numbers stay in digits."""
    if not 0 < n < 10_000:
        return str(n)
    parts: list[str] = []
    pending_zero = False
    for unit_value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // unit_value % 10
        if digit == 0:
            pending_zero = bool(parts)
            continue
        if pending_zero:
            parts.append("零")
            pending_zero = False
        parts.append(DIGITS[digit] + unit)
    text = "".join(parts)
    # 十一, not 一十一: the leading one of the tens is dropped in speech and writing.
    return text[1:] if 10 <= n < 20 else text


@dataclass(frozen=True)
class Leaf:
    """What a hospital needs to know about its leaf region."""

    code: str
    place: str  # the name hospitals are called after (越秀区, 东莞市, 香港)
    address: str  # the address prefix (广东省广州市越秀区)

    @functools.cached_property
    def area_code(self) -> int:
        """A made-up telephone area code shared by the hospitals of one city."""
        return mix64(int(self.code[:4])) % 900 + 100


def _updated_at(h: int) -> str:
    return f"{DAYS[(h >> 40) % 365]}T{(h >> 20) % 24:02d}:{(h >> 28) % 60:02d}:00Z"


# How a hospital's id is made: "coded" carries its leaf's code (H110101000123, the sample's own form),
# "opaque" is a uuid's hex form and says nothing of its leaf (as most real directories' ids).
ID_FORMATS = ("coded", "opaque")


def opaque_id(h: int) -> str:
    """A uuid's 32 hex digits from the record's 64-bit mix `h`: h times an odd 64-bit constant, which no two
    records share (mix64 is a bijection, and so is the product over 64-bit values), the same in every process.
    One product and one format: the sample serves a million of them, and its CPU is in the bench's figures."""
    return f"{h * 0x9E3779B97F4A7C15:032x}"


def hospital(leaf: Leaf, index: int, id_format: str = "coded") -> Hospital:
    """Hospital number `index` (0-based) of `leaf`; its id (of `id_format`) is unique across the directory."""
    cycle, slot = divmod(index, len(CYCLE))
    suffix, kind = CYCLE[slot]
    ordinal = cycle * PER_CYCLE[suffix] + RANK[slot] + 1
    name = f"{leaf.place}{suffix}" if ordinal == 1 else f"{leaf.place}第{chinese_number(ordinal)}{suffix}"
    h = mix64(int(leaf.code) * 10_000_019 + index)
    return {
        "id": f"H{leaf.code}{index + 1:06d}" if id_format == "coded" else opaque_id(h),
        "name": name,
        "region_code": leaf.code,
        "grade": GRADE_OF_PERCENT[h % 100],
        "type": kind,
        "address": f"{leaf.address}{ROADS[(h >> 8) % len(ROADS)]}{(h >> 12) % 888 + 1}号",
        "phone": f"0{leaf.area_code}-{(h >> 32) % 90_000_000 + 10_000_000}",
        "updated_at": _updated_at(h),
    }
