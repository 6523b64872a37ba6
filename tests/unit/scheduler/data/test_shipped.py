"""The data shipped in the package: present, identical to the sources, attributed."""

from __future__ import annotations

import csv
import filecmp
import os
from pathlib import Path

import pytest

from scheduler import data
from scheduler.data.build_btc_facts import HEADER, build

REPO_ROOT = Path(__file__).resolve().parents[4]
SHARED = Path(os.environ.get("HASHSERVE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.mark.parametrize(
    "path",
    [data.price_file(), *data.azure_trace_paths()],
    ids=lambda p: p.name,
)
def test_verbatim_copies_match_the_shared_files(path: Path) -> None:
    assert filecmp.cmp(path, SHARED / path.name, shallow=False)


def test_btc_facts_rebuild_identically(tmp_path: Path) -> None:
    out = tmp_path / "facts.csv"
    rows = build(SHARED, out)
    assert rows == 2242
    assert filecmp.cmp(out, data.btc_facts_file(), shallow=False)
    with open(data.btc_facts_file(), newline="") as f:
        assert tuple(next(csv.reader(f))) == HEADER


def test_every_shipped_file_is_attributed() -> None:
    text = data.attribution_file().read_text()
    for name in (data.PRICE_FILE, data.BTC_FACTS_FILE, data.AZURE_CODE_TRACE_FILE,
                 data.AZURE_CONV_TRACE_FILE):
        assert f"`{name}`" in text or name in text
    assert "CC-BY-4.0" in text and "Splitwise" in text and "MIT" in text


def test_unknown_files_are_refused() -> None:
    with pytest.raises(FileNotFoundError):
        data.data_path("nothing.csv")
