"""Corpus kinds: finding and listing them, their documents streamed, the digest, the split rule, bad input."""

from __future__ import annotations

import gzip
import json
import os

import pytest
from conftest import corpus_text

from gptui.core import corpus as corpus_module
from gptui.core.corpus import (
    Corpus,
    CorpusChanged,
    corpus_kind,
    corpus_name,
    corpus_stats,
    is_validation_document,
)
from gptui.core.data import sha256_file
from gptui.core.errors import CorpusError

DOCS = ["first document\nwith two lines\n", "second: café 東京 🙂\n", "third\n"]


def write_folder(root, docs=DOCS):
    root.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(docs):
        sub = root / ("b" if i % 2 else "a")
        sub.mkdir(exist_ok=True)
        (sub / f"doc{i}.md").write_text(text, encoding="utf-8")
    return root


def write_jsonl(path, docs=DOCS, field="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"id": i, field: text}, ensure_ascii=False) + "\n")
    return path


def write_parquet(path, docs=DOCS, column="text", row_group_size=2):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"id": list(range(len(docs))), column: docs})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def documents_of(path, **kw):
    source = Corpus.open(path, kw.pop("text_field", "text"))
    scan = source.scan(kw.get("replace_errors", False))
    return list(source.documents(scan, **kw)), source, scan


# --- kinds and names --------------------------------------------------------------------------------------------


def test_kinds_and_names_by_suffix(tmp_path):
    folder = write_folder(tmp_path / "notes")
    shards = tmp_path / "hub"
    (shards / "data").mkdir(parents=True)
    write_parquet(shards / "data" / "train-0.parquet")
    cases = {"a.txt": "txt", "a.txt.gz": "txt.gz", "a.jsonl": "jsonl", "a.jsonl.gz": "jsonl.gz",
             "a.parquet": "parquet", "a.md": None}
    for name, kind in cases.items():
        (tmp_path / name).write_bytes(b"x")
        assert corpus_kind(tmp_path / name) == kind, name
    assert corpus_kind(folder) == "folder" and corpus_kind(shards) == "parquet-shards"
    assert corpus_name(tmp_path / "a.txt.gz") == "a" and corpus_name(tmp_path / "a.jsonl") == "a"
    assert corpus_name(folder) == "notes"


def test_text_file_is_one_document_and_keeps_its_sha256(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    docs, source, scan = documents_of(path)
    assert "".join(docs) == corpus_text() and source.counts.documents == 1
    assert scan.digest == sha256_file(path), "earlier cache entries and runs keep their key"


def test_large_text_file_streams_in_pieces_cut_at_safe_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "PIECE_CHARS", 200)
    monkeypatch.setattr(corpus_module, "READ_BYTES", 64)
    text = corpus_text(200) + "  indented line\n\n   \nend é\n"
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    docs, _, _ = documents_of(path)
    assert len(docs) > 5 and "".join(docs) == text
    for piece in docs[:-1]:  # each piece ends with a newline and the next starts with a non-space
        assert piece.endswith("\n")
    for piece in docs[1:]:
        assert not piece[0].isspace()


def test_gzip_text(tmp_path):
    path = tmp_path / "g.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(corpus_text())
    docs, _, _ = documents_of(path)
    assert "".join(docs) == corpus_text()


def test_folder_documents_sorted_binary_skipped_links_not_followed(tmp_path):
    root = write_folder(tmp_path / "notes")
    (root / "a" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    (root / "a" / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the folder\n")
    os.symlink(outside, root / "b" / "link.txt")
    os.symlink(root / "a" / "doc0.md", root / "b" / "inner-link.md")
    docs, source, scan = documents_of(root)
    assert docs == [DOCS[0], DOCS[2], DOCS[1], DOCS[0]]  # a/doc0 a/doc2 b/doc1 b/inner-link (sorted paths)
    assert scan.binary_files == 2 and scan.documents == 4 == source.counts.documents
    assert "outside the folder\n" not in docs and "[core]\n" not in docs


def test_folder_replace_errors_keeps_undecodable_text_files(tmp_path):
    root = write_folder(tmp_path / "notes")
    (root / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    docs, source, scan = documents_of(root, replace_errors=True)
    assert "caf\ufffd\n" in docs and scan.binary_files == 0 and source.counts.replaced_bad_bytes


def test_folder_digest_covers_paths_and_contents(tmp_path):
    root = write_folder(tmp_path / "notes")
    first = Corpus.open(root).scan().digest
    assert Corpus.open(root).scan().digest == first
    (root / "a" / "doc0.md").write_text(DOCS[0] + "more\n")
    changed = Corpus.open(root).scan().digest
    assert changed != first
    (root / "a" / "doc0.md").rename(root / "a" / "doc9.md")
    assert Corpus.open(root).scan().digest not in (first, changed), "a rename is a new corpus too"


def test_folder_is_walked_in_sorted_path_order_and_keeps_its_digest(tmp_path):
    """The walk streams one folder at a time yet gives the order of the whole paths' bytes, so a folder's
    digest (its cache entry and the runs trained on it) is the one it had when every path was sorted at once."""
    root = tmp_path / "tree"
    for rel in ["a/b.txt", "a.txt", "a-b/c.txt", "ab.txt", "a/z/y.txt", "A.txt", "é.txt", "a b/q.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel + "\n")
    source = Corpus.open(root)
    rels = [e.rel for e in source.iter_files()]
    assert rels == sorted(rels, key=lambda r: r.encode()) == [
        "A.txt", "a b/q.txt", "a-b/c.txt", "a.txt", "a/b.txt", "a/z/y.txt", "ab.txt", "é.txt"]
    scan = source.scan()
    assert scan.digest == "2434a511e5a23254ed6425bebfb93320581d0eb2428e85074a79a3c0b55e3be9"
    assert scan.text_files is None and scan.text_file_count == 8, "a folder's files are not held in memory"
    assert list(source.documents(scan)) == [r + "\n" for r in rels]


def test_jsonl_documents_and_text_field(tmp_path):
    docs, _, _ = documents_of(write_jsonl(tmp_path / "d.jsonl"))
    assert docs == DOCS
    docs, _, _ = documents_of(write_jsonl(tmp_path / "c.jsonl", field="content"), text_field="content")
    assert docs == DOCS
    docs, _, _ = documents_of(write_jsonl(tmp_path / "z.jsonl.gz", opener=gzip.open))
    assert docs == DOCS
    a = Corpus.open(tmp_path / "c.jsonl", "content").scan().digest
    assert a != Corpus.open(tmp_path / "c.jsonl", "text").scan().digest, "the field is part of the key"


def test_parquet_file_and_shards(tmp_path):
    docs, _, scan = documents_of(write_parquet(tmp_path / "p.parquet", DOCS * 3))
    assert docs == DOCS * 3 and scan.documents == 9
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    (hub / "README.md").write_text("a dataset card\n")
    write_parquet(hub / "data" / "train-00001.parquet", ["later\n"])
    write_parquet(hub / "data" / "train-00000.parquet", DOCS)
    docs, _, scan = documents_of(hub)
    assert docs == DOCS + ["later\n"] and scan.documents == 4 and scan.text_file_count == 2


def test_validation_rule_is_by_content_and_about_a_tenth():
    docs = [f"document number {i}\n" for i in range(5000)]
    held = [d for d in docs if is_validation_document(d)]
    assert 0.08 < len(held) / len(docs) < 0.12
    assert [is_validation_document(d) for d in docs[:50]] == [is_validation_document(d) for d in docs[:50]]
    # adding documents moves no other document across
    assert [d for d in docs + ["a new one\n"] if is_validation_document(d) and d in docs] == held


# --- listing ----------------------------------------------------------------------------------------------------


def test_stats_of_each_kind(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("héllo\nworld\n", encoding="utf-8")
    s = corpus_stats(text)
    assert (s.kind, s.bytes, s.files, s.documents, s.chars, s.lines) == ("txt", 13, 1, 1, 12, 2)
    root = write_folder(tmp_path / "notes")
    (root / "bin.dat").write_bytes(b"\0\1\2")
    s = corpus_stats(root)
    assert (s.kind, s.files, s.documents) == ("folder", 4, 3)
    assert s.bytes == sum(len(d.encode()) for d in DOCS) + 3
    assert corpus_stats(write_jsonl(tmp_path / "d.jsonl")).documents == 3
    assert corpus_stats(write_parquet(tmp_path / "p.parquet")).documents == 3
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\xff\n")
    assert corpus_stats(bad).error == "not UTF-8 at byte 2"


# --- bad input: one line naming the file (and the line or column) -----------------------------------------------


def test_empty_folder_and_folder_without_text(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"^empty/ is empty"):
        Corpus.open(tmp_path / "empty").scan()
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "a.png").write_bytes(b"\0\0")
    with pytest.raises(CorpusError, match=r"^bin/ has no text file \(1 binary file skipped\)"):
        Corpus.open(binary).scan()


@pytest.mark.parametrize("line, problem", [
    ('{"text": "ok"', r"bad\.jsonl line 2, column 14: not JSON"),
    ('{"content": "x", "id": 3}', r"bad\.jsonl line 2: no 'text' field \(fields: content, id\)"),
    ('{"text": 5}', r"bad\.jsonl line 2: the 'text' field is int, not text"),
    ("[1, 2]", r"bad\.jsonl line 2: not a JSON object"),
])
def test_bad_json_line_is_named_or_skipped(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "good\\n"}\n' + line + '\n{"text": "also good\\n"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=problem + r".*--skip-bad-rows"):
        documents_of(path)
    docs, source, _ = documents_of(path, skip_bad_rows=True)
    assert docs == ["good\n", "also good\n"] and source.counts.skipped_rows == 1


def test_parquet_without_the_column_names_its_columns(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", column="content")
    with pytest.raises(CorpusError, match=r"p\.parquet has no column 'text' \(columns: id, content\)"):
        Corpus.open(path).scan()


def test_not_parquet_at_all(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("this is not parquet\n")
    with pytest.raises(CorpusError, match=r"^fake\.parquet is not a Parquet file"):
        Corpus.open(path).scan()


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    path = write_parquet(tmp_path / "p.parquet")
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kw):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(CorpusError, match=r"pip install -e '\.\[data\]'"):
        Corpus.open(path).scan()


def test_unreadable_file(tmp_path, monkeypatch):
    import builtins

    root = write_folder(tmp_path / "notes")
    denied = root / "a" / "doc0.md"
    real_open = builtins.open

    def guarded(file, *args, **kw):  # as chmod 0 would, for a root that reads every file
        if str(file) == str(denied):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(CorpusError, match=r"doc0\.md: cannot read \(Permission denied\)"):
        Corpus.open(root).scan()


def test_bad_utf8_text_file_is_refused_with_its_offset_or_replaced(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine text\n" * 3 + b"\xff oops\n")
    with pytest.raises(CorpusError, match=r"bad\.txt is not valid UTF-8 \(bad byte 0xff at offset 30\)"):
        Corpus.open(path).scan()
    docs, _, scan = documents_of(path, replace_errors=True)
    assert "".join(docs).endswith("\ufffd oops\n") and scan.bad_utf8_files == 1


def test_bad_utf8_offset_across_read_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "READ_BYTES", 7)
    path = tmp_path / "bad.txt.gz"
    with gzip.open(path, "wb") as f:
        f.write("é".encode() * 20 + b"\xe9x")
    source = Corpus.open(path)
    with pytest.raises(CorpusError, match=r"bad byte 0xe9 at offset 40"):
        list(source.documents(source.scan()))


def test_damaged_gzip(tmp_path):
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    source = Corpus.open(path)
    with pytest.raises(CorpusError, match=r"broken\.txt\.gz: cannot read"):
        list(source.documents(source.scan()))


def test_empty_text_file(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("  \n\n")
    with pytest.raises(CorpusError, match=r"blank\.txt is empty"):
        Corpus.open(path).scan()


def test_a_change_while_preparing_is_detected(tmp_path):
    root = write_folder(tmp_path / "notes")
    source = Corpus.open(root)
    scan = source.scan()
    source.check_unchanged(scan)
    (root / "a" / "new.md").write_text("added meanwhile\n")
    with pytest.raises(CorpusChanged, match=r"notes/ changed while it was prepared; prepare again"):
        source.check_unchanged(scan)


# --- preparing each kind (tokenizer, split, boundary token, cache) ---------------------------------------------

MANY = [f"Document {i}: {corpus_text(3 + i % 4)}" for i in range(40)]  # enough documents for the hash split


def prepare_kind(workspace, path, spec=None, **kw):
    from gptui.core.data import TokenizerSpec, prepare

    return prepare(path, spec or TokenizerSpec("bpe", 300, "gpt4"), workspace.cache, **kw)


def cache_entries(workspace):
    return sorted(p.name for p in workspace.cache.iterdir())


@pytest.mark.parametrize("kind", ["folder", "jsonl", "jsonl.gz", "parquet"])
def test_every_kind_gives_the_same_tokens_for_the_same_documents(workspace, kind):
    import numpy as np

    folder = workspace.inputs / "many"
    for i, text in enumerate(MANY):
        (folder / f"{i:03d}.txt").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    reference = prepare_kind(workspace, folder)
    if kind == "folder":
        data = reference
    elif kind == "parquet":
        data = prepare_kind(workspace, write_parquet(workspace.inputs / "many.parquet", MANY))
    else:
        opener = gzip.open if kind.endswith(".gz") else open
        data = prepare_kind(workspace, write_jsonl(workspace.inputs / f"many.{kind}", MANY, opener=opener))
    assert data.corpus_kind == kind and data.documents == 40
    assert np.array_equal(np.asarray(data.tokens), np.asarray(reference.tokens))
    eot = data.tokenizer.eot_id
    tokens = np.asarray(data.tokens)
    # train documents, then validation documents, an end-of-text between documents within each
    held = [d for d in MANY if is_validation_document(d)]
    assert 0 < len(held) < 40
    train_text = data.tokenizer.decode(tokens[: data.split].tolist())
    assert train_text == "<|endoftext|>".join(d for d in MANY if not is_validation_document(d))
    assert int((tokens[: data.split] == eot).sum()) == 40 - len(held) - 1
    assert data.tokenizer.decode(tokens[data.split :].tolist()) == "<|endoftext|>".join(held)
    assert data.val_bytes == sum(len(d.encode()) for d in held), "bits per byte counts the validation text"


def test_folder_cache_hit_miss_and_a_changed_file(workspace):
    root = write_folder(workspace.inputs / "notes", [corpus_text(40 + i) for i in range(12)])
    first = prepare_kind(workspace, root)
    again = prepare_kind(workspace, root)
    assert not first.cached and again.cached and again.corpus_sha256 == first.corpus_sha256
    assert again.documents == first.documents == 12 and again.corpus_kind == "folder"
    (root / "a" / "doc0.md").write_text(corpus_text(41))
    changed = prepare_kind(workspace, root)
    assert not changed.cached and changed.corpus_sha256 != first.corpus_sha256
    assert len(cache_entries(workspace)) == 2


def test_few_documents_split_at_the_last_tenth_of_tokens(workspace):
    root = write_folder(workspace.inputs / "three", [corpus_text(50), corpus_text(60), corpus_text(70)])
    data = prepare_kind(workspace, root)
    assert data.split == int(len(data.tokens) * 0.9) and data.documents == 3


def test_single_text_file_is_encoded_as_before(workspace, corpus):
    """The one-document corpus: today's tokenizer, today's tokens, the last 10% of the tokens held out."""
    import numpy as np

    from gptui.core.tokenizer import train_tokenizer

    text = corpus.read_text(encoding="utf-8")
    data = prepare_kind(workspace, corpus)
    before = train_tokenizer(text, "bpe", 300, "gpt4")
    assert data.tokenizer.token_bytes == before.token_bytes
    assert np.array_equal(np.asarray(data.tokens), before.encode_corpus(text))
    assert data.split == int(len(data.tokens) * 0.9) and data.documents == 1


def test_skipped_rows_are_counted_and_the_entry_is_served_only_with_the_flag(workspace):
    path = workspace.inputs / "rows.jsonl"
    write_jsonl(path, MANY)
    with open(path, "a", encoding="utf-8") as f:
        f.write("not json at all\n")
    with pytest.raises(CorpusError, match=r"rows\.jsonl line 41, column 1: not JSON"):
        prepare_kind(workspace, path)
    assert cache_entries(workspace) == [], "a refused corpus writes nothing"
    data = prepare_kind(workspace, path, skip_bad_rows=True)
    assert data.skipped == {"bad rows": 1} and data.documents == 40
    with pytest.raises(CorpusError, match=r"rows\.jsonl line 41, column 1: not JSON"):
        prepare_kind(workspace, path)
    assert prepare_kind(workspace, path, skip_bad_rows=True).cached


def test_text_field_names_the_field(workspace):
    path = write_jsonl(workspace.inputs / "c.jsonl", MANY, field="content")
    with pytest.raises(CorpusError, match=r"line 1: no 'text' field \(fields: id, content\)"):
        prepare_kind(workspace, path)
    assert prepare_kind(workspace, path, text_field="content").documents == 40


@pytest.mark.parametrize("phase", ["hashing", "training tokenizer"])
def test_cancel_leaves_no_cache_entry(workspace, phase):
    import threading

    from gptui.core.errors import CorpusCancelled

    root = write_folder(workspace.inputs / "notes", MANY)
    cancel = threading.Event()

    def progress(stage, fraction):
        if stage.startswith(phase):
            cancel.set()

    with pytest.raises(CorpusCancelled):
        prepare_kind(workspace, root, progress=progress, cancel=cancel)
    assert cache_entries(workspace) == []


def test_a_corpus_changed_while_it_is_prepared_is_refused(workspace):
    root = write_folder(workspace.inputs / "notes", MANY)

    def progress(stage, fraction):
        if stage.startswith("encoding") and not (root / "late.txt").exists():
            (root / "late.txt").write_text("written while preparing\n")

    with pytest.raises(CorpusChanged, match=r"notes/ changed while it was prepared; prepare again"):
        prepare_kind(workspace, root, progress=progress)
    assert cache_entries(workspace) == []


def test_char_fine_tune_tokenizer_refuses_a_folder_with_unseen_characters(workspace):
    from gptui.core.data import TokenizerSpec, prepare_with_tokenizer

    small = workspace.inputs / "small.txt"
    small.write_text(corpus_text(), encoding="utf-8")
    run_tokenizer = prepare_kind(workspace, small, TokenizerSpec("char", 0, "")).tokenizer.to_json()
    root = write_folder(workspace.inputs / "notes", [corpus_text(20), "Zebra ünïcode\n"])
    with pytest.raises(CorpusError, match=r"run X's char tokenizer cannot encode notes/: it lacks \d+ characters"):
        prepare_with_tokenizer(root, run_tokenizer, workspace.cache, source="run X's")


def test_a_folder_read_with_replaced_bytes_is_another_cache_entry(workspace):
    root = write_folder(workspace.inputs / "notes", MANY)
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    strict = prepare_kind(workspace, root)
    replaced = prepare_kind(workspace, root, replace_errors=True)
    assert not replaced.cached and replaced.documents == strict.documents + 1
    assert strict.skipped == {"binary files": 1} and prepare_kind(workspace, root).cached


# --- the workspace: resolving names, adding by path -------------------------------------------------------------


def test_corpus_path_resolves_every_kind_and_refuses_ambiguity(workspace):
    write_folder(workspace.inputs / "notes")
    write_jsonl(workspace.inputs / "rows.jsonl")
    assert workspace.corpus_path("notes") == workspace.inputs / "notes"
    assert workspace.corpus_path("notes/") == workspace.inputs / "notes"
    assert workspace.corpus_path("rows") == workspace.corpus_path("rows.jsonl") == workspace.inputs / "rows.jsonl"
    (workspace.inputs / "rows.txt").write_text("text\n")
    with pytest.raises(CorpusError, match=r"several corpora are named 'rows' \(rows\.txt, rows\.jsonl\)"):
        workspace.corpus_path("rows")
    (workspace.inputs / "readme.md").write_text("not a corpus\n")
    with pytest.raises(CorpusError, match=r"readme\.md is not a corpus"):
        workspace.corpus_path("readme.md")
    kinds = {c.file_name: c.kind for c in workspace.corpora()}
    assert kinds == {"notes": "folder", "rows.jsonl": "jsonl", "rows.txt": "txt", "tinyshakespeare.txt": "txt"}


def test_adding_links_large_files_and_folders_and_copies_small_text(workspace, tmp_path, monkeypatch):
    from gptui.core import workspace as workspace_module

    outside = tmp_path / "outside"
    folder = write_folder(outside / "letters")
    rows = write_jsonl(outside / "rows.jsonl")
    small = outside / "poem.txt"
    small.write_text("a small poem\n")
    big = outside / "book.md"
    big.write_text("a book\n" * 100)
    monkeypatch.setattr(workspace_module, "COPY_LIMIT_BYTES", 200)

    copied = workspace.add_corpus(small)
    assert copied == workspace.inputs / "poem.txt" and not copied.is_symlink()
    linked = workspace.add_corpus(big)
    assert linked == workspace.inputs / "book.md.txt" and linked.is_symlink() and linked.resolve() == big
    assert workspace.add_corpus(folder).resolve() == folder and (workspace.inputs / "letters").is_symlink()
    assert workspace.add_corpus(rows).is_symlink()
    assert workspace.add_corpus(rows) == workspace.inputs / "rows.jsonl", "adding it again is a no-op"
    other = tmp_path / "elsewhere" / "rows.jsonl"
    other.parent.mkdir()
    write_jsonl(other, ["other\n"])
    with pytest.raises(CorpusError, match=r"a corpus named 'rows.jsonl' already exists"):
        workspace.add_corpus(other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"empty is an empty folder"):
        workspace.add_corpus(tmp_path / "empty")
    listed = {c.name: (c.kind, c.documents) for c in workspace.corpora()}
    assert listed["letters"] == ("folder", 3) and listed["rows"] == ("jsonl", 3) and listed["book.md"][0] == "txt"


# --- the tokenizer's sample of a large folder --------------------------------------------------------------------


def test_a_folder_reads_only_the_files_its_sample_keeps(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "notes", [f"note {i}: " + "word " * (i + 1) + "\n" for i in range(8)])
    source = Corpus.open(root)
    scan = source.scan()
    opened = []

    def recording_open(path, *args, **kwargs):
        opened.append(os.path.basename(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(corpus_module, "open", recording_open, raising=False)
    sizes = []

    def keep(size: int) -> bool:
        sizes.append(size)
        return len(sizes) % 3 == 1

    kept = list(source.documents(scan, keep=keep))
    entries = [e for e in source.iter_files()]
    assert sizes == [e.size for e in entries]  # asked of every file, in order, before it is read
    assert opened == [os.path.basename(e.full) for e in entries[::3]]
    assert kept == [open(e.full, encoding="utf-8").read() for e in entries[::3]]


def test_a_large_folder_gets_the_tokenizer_its_sample_read_whole_gives(workspace):
    from gptui.core.data import TokenizerSpec
    from gptui.core.encode import train_tokenizer_from_documents

    docs = [f"file {i}: " + " ".join(f"w{(i * 7 + j) % 97}x" for j in range(300)) + "\n" for i in range(60)]
    folder = workspace.inputs / "big"
    for i, text in enumerate(docs):
        (folder / f"{i:03d}.txt").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    total = sum(len(d) for d in docs)
    spec = TokenizerSpec("bpe", 300, "gpt4", sample_mb=total / 4 / 1e6)  # a quarter of the folder
    data = prepare_kind(workspace, folder, spec)
    read_whole = train_tokenizer_from_documents(lambda: iter(docs), "bpe", 300, "gpt4", spec.sample_mb,
                                                total_bytes=total)
    assert data.tokenizer.token_bytes == read_whole.token_bytes
    learnt_all = train_tokenizer_from_documents(lambda: iter(docs), "bpe", 300, "gpt4", 1, total_bytes=total)
    assert data.tokenizer.token_bytes != learnt_all.token_bytes  # a sample indeed, not the whole folder
