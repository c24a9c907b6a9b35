"""Indexing a UCF51 copy from listings and headers alone: which clips exist, in which split, and what is wrong.

A clip (key ``<Class>/v_<Class>_gXX_cYY``) is known when its video, its embedding or a split-list line
names it. The class list is the embeddings' class folders (sorted), so labels are 0..C-1 in that order.
Nothing is decoded here; ``UCF51.check`` opens the files. Problems of one kind are gathered into one
:class:`Problem` naming every item it spoils, with one example file.

The index records per clip which files exist (its video, its embedding), and keeps the problems of a
missing or bad file apart by the kind of file (:data:`VIDEO`, :data:`EMBEDDING`): a check reports those of
the kinds its fields read (a teacher on stored embeddings reads no video), via :meth:`Index.problems_for`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kdbench.data import Problem

from . import layout
from .embeddings import Embeddings
from .layout import EMBEDDINGS, LISTS, UCF51_CLASSES, VIDEOS

#: the kinds of file a clip has: its AVI (frames for the student, the audio track for an audio teacher) and
#: its stored embedding
VIDEO, EMBEDDING = "video", "embedding"
FILE_KINDS = (VIDEO, EMBEDDING)


def aggregate(entries: list[tuple[str, str, str]], folder: str, many: str, with_detail: bool = True) -> Problem:
    """One Problem for ``entries`` (key, file, what is wrong): the file itself when it is one, else
    ``folder`` with ``many`` (the count and kind) and the first file (and its detail) as an example."""
    entries = sorted(entries)
    key, file, detail = entries[0]
    if len(entries) == 1:
        return Problem(file, detail, (key,))
    example = f"{file}: {detail}" if with_detail and detail else file
    return Problem(folder, f"{many} (e.g. {example})", tuple(k for k, _, _ in entries))


def shown(path: Path, root: Path) -> str:
    """A path as reports show it: relative to the dataset root when inside it."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


@dataclass
class Index:
    root: Path
    class_names: tuple[str, ...] = ()
    embeddings: Embeddings | None = None
    videos: dict[str, Path] = field(default_factory=dict)          # clip key -> existing AVI
    embedded: set[str] = field(default_factory=set)                # clip keys of our classes with an embedding
    assign: dict[str, str] = field(default_factory=dict)           # clip key -> "train" | "test"
    list_files: list[Path] = field(default_factory=list)
    #: problems whatever the fields read (split lists, the class list, the archive as a whole)
    problems: list[Problem] = field(default_factory=list)
    #: kind of file -> problems of clips whose file of that kind is missing or bad (and of no such files at all)
    missing: dict[str, list[Problem]] = field(default_factory=lambda: {kind: [] for kind in FILE_KINDS})
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def video_path(self, key: str) -> Path:
        """Where clip ``key``'s AVI is (or would be)."""
        return self.videos.get(key) or self.root / VIDEOS / f"{key}.avi"

    def has(self, key: str, kind: str) -> bool:
        """Whether clip ``key``'s file of ``kind`` exists."""
        return key in (self.videos if kind == VIDEO else self.embedded)

    def problems_for(self, kinds) -> list[Problem]:
        """The problems of a check that reads files of ``kinds`` (a subset of :data:`FILE_KINDS`)."""
        return self.problems + [p for kind in FILE_KINDS if kind in kinds for p in self.missing[kind]]

    def members(self, split: str, skipped: frozenset[str]) -> list[str]:
        return sorted(k for k, side in self.assign.items() if side == split and k not in skipped)


def find_embeddings(root: Path, option: str | None, teacher_input: str, index: Index) -> Embeddings | None:
    """Open the embeddings source (option, else the default under root); record why there is none."""
    if option:
        path = Path(option).expanduser()
        if not path.exists():
            index.problems.append(Problem(str(path), "embeddings not found: set embeddings= to the folder of "
                                                     "<Class>/v_*.npy files or to the release's .tar.gz"))
            return None
    else:
        candidates = [root / EMBEDDINGS, root / f"{EMBEDDINGS}.tar.gz"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            message = (f"no embeddings: neither {EMBEDDINGS}/ nor {EMBEDDINGS}.tar.gz is in the root; set "
                       f"embeddings=PATH (a folder of <Class>/v_*.npy, or the release's .tar.gz)")
            if teacher_input == "embedding":
                index.missing[EMBEDDING].append(Problem(f"{EMBEDDINGS}/", message))
            else:
                index.notes.append(f"{message}; the class list is the built-in UCF51 list")
            return None
    store = Embeddings(path, shown(path, root))
    if store.error:
        index.problems.append(Problem(store.display, store.error))
    if store.loose:
        index.notes.append(f"{store.loose} .npy file(s) outside any class folder of {store.display} were ignored")
    return store


def choose_classes(index: Index) -> None:
    """The class list: the embeddings' class folders that are UCF51 classes (others are problems)."""
    store = index.embeddings
    folders = store.classes() if store else []
    if not folders:
        if store is not None and not store.error:
            index.problems.append(Problem(store.display, "holds no <Class>/v_*.npy embeddings"))
        index.class_names = UCF51_CLASSES
        return
    for cls in folders:
        if cls not in UCF51_CLASSES:
            keys = tuple(k for k in store.keys if k.startswith(cls + "/"))
            index.problems.append(Problem(f"{store.display}/{cls}/", f"class folder {cls!r} is not one of the 51 "
                                          f"UCF51 classes; its {len(keys)} embedding(s) are not used", keys))
    index.class_names = tuple(c for c in folders if c in UCF51_CLASSES)
    if not index.class_names:
        index.problems.append(Problem(store.display, "none of its class folders is a UCF51 class (is embeddings= "
                                                     "the folder that holds the class folders?)"))
        index.class_names = UCF51_CLASSES
    elif len(index.class_names) < len(UCF51_CLASSES):
        missing = sorted(set(UCF51_CLASSES) - set(index.class_names))
        index.notes.append(f"the embeddings cover {len(index.class_names)} of the 51 UCF51 classes (missing: "
                           f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); the class list is theirs")


def list_videos(index: Index) -> None:
    """Find the AVIs of our classes; count those of other classes (UCF101's 50 classes without audio)."""
    folder = index.root / VIDEOS
    if not folder.is_dir():
        return
    classes = set(index.class_names)
    other = 0
    for entry in os.scandir(folder):
        if not entry.is_dir():
            continue
        files = [f for f in os.scandir(entry.path) if f.name.lower().endswith(".avi") and not f.name.startswith("._")]
        if entry.name not in classes:
            other += len(files)
            continue
        for f in files:
            index.videos[f"{entry.name}/{f.name[:-4]}"] = Path(f.path)
    if other:
        index.dropped["videos of classes outside the class list (UCF101's classes without audio)"] = other


def build(root: Path, embeddings: str | None, split: int, teacher_input: str) -> Index:
    index = Index(root)
    index.embeddings = find_embeddings(root, embeddings, teacher_input, index)
    choose_classes(index)
    list_videos(index)
    classes = set(index.class_names)
    store = index.embeddings
    index.embedded = {k for k in (store.keys if store else []) if k.split("/", 1)[0] in classes}
    known = set(index.videos) | index.embedded
    lists = layout.read_lists(root, split, classes, {k.lower(): k for k in known})
    if lists is not None:
        index.list_files = lists.files
        index.problems += lists.problems
        known |= set(lists.assign)
    unplaced = []
    for key in sorted(known):
        side = lists.assign.get(key) if lists is not None else layout.rule_split(key.split("/", 1)[1], split)
        if side is None:
            unplaced.append(key)
        else:
            index.assign[key] = side
    if lists is not None:
        if unplaced:
            index.dropped[f"clips not named by {', '.join(layout.list_names(split))}"] = len(unplaced)
        index.notes.append(f"split {split} from {LISTS}/{' + '.join(layout.list_names(split))} (lines of the "
                           f"{len(classes)} classes; {lists.other_classes} lines of other classes ignored)")
    else:
        groups = layout.tested_groups(split)
        index.notes.append(f"split {split} by UCF101's group rule ({LISTS}/ has no lists for it): test = groups "
                           f"g{groups[0]:02d}-g{groups[-1]:02d}, train = the other groups")
        if unplaced:
            detail = "not named v_<Class>_gXX_cYY, so the group rule cannot place it"
            index.problems.append(aggregate([(k, f"{VIDEOS}/{k}.avi", detail) for k in unplaced], f"{VIDEOS}/",
                                            f"{len(unplaced)} clips are not named v_<Class>_gXX_cYY, so the group "
                                            f"rule cannot place them", with_detail=False))
    _missing(index, lists)
    if not index.assign and not any(not p.items for p in index.problems_for(FILE_KINDS)):
        index.problems.append(Problem(f"{VIDEOS}/", f"no clips of the {len(classes)} classes found: expected "
                                                    f"{VIDEOS}/<Class>/v_<Class>_gXX_cYY.avi under the root"))
    return index


def _missing(index: Index, lists) -> None:
    """Problems of clips in a split whose files are absent or whose embedding header is wrong, by kind of file
    (a listed clip with no file at all is a problem whatever is read)."""
    store = index.embeddings
    nowhere = sorted(k for k in index.assign if not any(index.has(k, kind) for kind in FILE_KINDS))
    if lists is not None and nowhere:
        sources = {lists.source[k] for k in nowhere}
        if len(nowhere) == 1:
            problem = Problem(lists.source[nowhere[0]], f"names {nowhere[0]}.avi, which has neither a video nor "
                                                        f"an embedding", tuple(nowhere))
        else:
            problem = Problem(sources.pop() if len(sources) == 1 else f"{LISTS}/", f"{len(nowhere)} listed clips "
                              f"have neither a video nor an embedding (e.g. {nowhere[0]}.avi)", tuple(nowhere))
        index.problems.append(problem)
        skip = set(nowhere)
    else:
        skip = set()
    total = len(index.assign)
    no_video = [(k, f"{VIDEOS}/{k}.avi", "video missing") for k in index.assign if not index.has(k, VIDEO)
                and k not in skip]
    if no_video:
        where = f"{VIDEOS}/" if (index.root / VIDEOS).is_dir() else f"{VIDEOS}/, which does not exist"
        index.missing[VIDEO].append(aggregate(no_video, f"{VIDEOS}/", f"{len(no_video)} of {total} videos missing "
                                              f"under {where}", with_detail=False))
    if store is None or store.error and not store.where:  # an unreadable archive: its one [dataset] problem says it all
        return
    sep = ":" if store.is_tar else "/"
    no_embedding = [(k, f"{store.display}{sep}{k}.npy", "embedding missing") for k in index.assign
                    if not index.has(k, EMBEDDING) and k not in skip]
    if no_embedding:
        index.missing[EMBEDDING].append(aggregate(no_embedding, f"{store.display}/", f"{len(no_embedding)} of "
                                                  f"{total} clips have no embedding", with_detail=False))
    faulty = [(k, store.where[k], store.faults[k]) for k in index.assign if k in store.faults]
    if faulty:
        index.missing[EMBEDDING].append(aggregate(faulty, store.display, f"{len(faulty)} embeddings are not "
                                                  f"readable float32 ({layout.EMBED_DIM},) arrays"))
