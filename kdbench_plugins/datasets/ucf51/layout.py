"""Where UCF51's files are and which split a clip belongs to: class names, file names, split lists, group rule.

UCF101 (Soomro et al., 2012) stores ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``: clip YY of group XX,
where a group is one actor/setting, so clips of one group look alike. Its three official splits keep
groups apart: split k tests groups 7k-6 ... 7k (split 1: g01-g07) and trains on the other 18 of the
25 groups. The official lists (``ucfTrainTestlist/``) write this down; they are used when present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kdbench.data import Problem

VIDEOS = "UCF-101"
LISTS = "ucfTrainTestlist"
EMBEDDINGS = "audiocnn14embed512_features"
EMBED_DIM = 512
GROUPS = 25

#: The 51 UCF101 classes that have an audio track, i.e. the class folders of the CCL release's
#: ``datasets/UCF101/audiocnn14embed512_features.tar.gz`` (shared/data/ucf51_audio_cnn14_512), sorted.
#: Frozen here so the generator can write them and a copy without embeddings still has a class list.
UCF51_CLASSES = (
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching",
    "BasketballDunk", "BlowDryHair", "BlowingCandles", "BodyWeightSquats", "Bowling", "BoxingPunchingBag",
    "BoxingSpeedBag", "BrushingTeeth", "CliffDiving", "CricketBowling", "CricketShot", "CuttingInKitchen",
    "FieldHockeyPenalty", "FloorGymnastics", "FrisbeeCatch", "FrontCrawl", "Haircut", "HammerThrow",
    "Hammering", "HandstandPushups", "HandstandWalking", "HeadMassage", "IceDancing", "Knitting", "LongJump",
    "MoppingFloor", "ParallelBars", "PlayingCello", "PlayingDaf", "PlayingDhol", "PlayingFlute",
    "PlayingSitar", "Rafting", "ShavingBeard", "Shotput", "SkyDiving", "SoccerPenalty", "StillRings",
    "SumoWrestling", "Surfing", "TableTennisShot", "Typing", "UnevenBars", "WallPushups", "WritingOnBoard",
)

#: UCF101's one spelling quirk, kept by the release: folder HandstandPushups holds v_HandStandPushups_*.
FILE_PREFIX = {"HandstandPushups": "HandStandPushups"}

STEM = re.compile(r"^v_(?P<name>.+)_g(?P<group>\d+)_c(?P<clip>\d+)$")


def stem_for(cls: str, group: int, clip: int) -> str:
    """UCF101's file stem of clip ``clip`` of group ``group`` of class ``cls``."""
    return f"v_{FILE_PREFIX.get(cls, cls)}_g{group:02d}_c{clip:02d}"


def group_of(stem: str) -> int | None:
    """The group number in a ``v_<Class>_gXX_cYY`` stem, or None if the name has another form."""
    match = STEM.match(stem)
    return int(match["group"]) if match else None


def tested_groups(split: int) -> range:
    """Groups tested by UCF101 split ``split`` (1-3): 7k-6 ... 7k."""
    return range(7 * split - 6, 7 * split + 1)


def rule_split(stem: str, split: int) -> str | None:
    """``train``/``test`` for a clip by UCF101's group rule, None when its name carries no group."""
    group = group_of(stem)
    if group is None:
        return None
    return "test" if group in tested_groups(split) else "train"


def list_names(split: int) -> tuple[str, str]:
    return f"trainlist{split:02d}.txt", f"testlist{split:02d}.txt"


@dataclass
class SplitLists:
    """What the official lists of one split say about the clips of our classes."""

    assign: dict[str, str] = field(default_factory=dict)     # clip key -> "train" | "test"
    source: dict[str, str] = field(default_factory=dict)     # clip key -> list file it came from
    files: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    other_classes: int = 0                                    # lines of classes outside ours


def read_lists(root: Path, split: int, classes: set[str], canonical: dict[str, str]) -> SplitLists | None:
    """Read ``trainlist0N``/``testlist0N`` restricted to ``classes``; None when neither file exists.

    Lines are ``Class/v_....avi`` with an optional 1-based label (train lists have it). Keys are matched
    to the clips found on disk ignoring case (``canonical``: lower-case key -> key), so a spelling
    variant in a list still finds its file.
    """
    folder = root / LISTS
    paths = [folder / name for name in list_names(split)]
    present = [p.exists() for p in paths]
    if not any(present):
        return None
    out = SplitLists(files=[p for p in paths if p.exists()])
    if not all(present):
        missing = [p.name for p, ok in zip(paths, present) if not ok]
        out.problems.append(Problem(f"{LISTS}/", f"split {split}: {', '.join(missing)} is missing beside "
                                    f"{', '.join(p.name for p in out.files)}; restore it, or remove both to use "
                                    f"UCF101's group rule"))
        return out
    both: list[str] = []
    for path, side in zip(paths, ("train", "test")):
        rel = f"{LISTS}/{path.name}"
        bad: list[str] = []
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError as error:
            out.problems.append(Problem(rel, f"cannot read: {error.strerror or error}"))
            continue
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            name = text.split()[0].replace("\\", "/")
            parts = name.split("/")
            if len(parts) != 2 or not parts[1].lower().endswith(".avi"):
                bad.append(f"line {number}: {text[:60]!r}")
                continue
            if parts[0] not in classes:
                out.other_classes += 1
                continue
            key = f"{parts[0]}/{parts[1][:-4]}"
            key = canonical.get(key.lower(), key)
            if key in out.assign and out.assign[key] != side:
                both.append(key)
            out.assign[key] = side
            out.source[key] = rel
        if bad:
            out.problems.append(Problem(rel, f"{len(bad)} line(s) not of the form Class/v_<Class>_gXX_cYY.avi "
                                             f"(e.g. {bad[0]})"))
    if both:
        out.problems.append(Problem(f"{LISTS}/{paths[0].name}", f"{len(both)} clip(s) are in both "
                                    f"{paths[0].name} and {paths[1].name} (e.g. {both[0]})", tuple(sorted(both))))
    return out


def read_class_index(root: Path) -> dict[str, int] | None:
    """``classInd.txt`` as class -> 1-based label, or None when absent/unreadable (it is informative only)."""
    path = root / LISTS / "classInd.txt"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    index = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            index[parts[1]] = int(parts[0])
    return index
