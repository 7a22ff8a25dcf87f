"""Your own data (fedproxy.data.local, --data): a folder of JSON lines, every bad file named with its line."""

import json

import pytest

from fedproxy.data.local import load_local
from fedproxy.errors import DataError

WORDS = {"pos": ["great", "lovely"], "neg": ["awful", "rude"]}


def _lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_dataset(root, kind="classification", clients=("alpha", "beta"), n=12):
    for c in clients:
        for split, k in (("train", n), ("test", n // 2)):
            rows = ([{"text": f"{c} {WORDS[lab][i % 2]} w{i}", "label": lab} for i in range(k)
                     for lab in ("pos", "neg")] if kind == "classification" else
                    [{"prompt": f"{c} which word w{i} ?", "completion": f"w{i}"} for i in range(k)])
            _lines(root / "clients" / c / f"{split}.jsonl", rows)
    val = ([{"text": f"val {WORDS[lab][0]} w{i}", "label": lab} for i in range(4) for lab in ("pos", "neg")]
           if kind == "classification" else [{"prompt": f"val which word w{i} ?", "completion": [f"w{i}", "x"]}
                                             for i in range(4)])
    _lines(root / "server" / "val.jsonl", val)
    _lines(root / "server" / "text.jsonl", [{"text": f"public text w{i} w{i + 1}"} for i in range(8)])
    return root


def test_a_classification_folder_becomes_a_benchmark(tmp_path):
    bench = load_local(make_dataset(tmp_path / "reviews"), seed=0)
    assert bench.client_names == ["alpha", "beta"] and bench.task == "classification"
    assert bench.labels == ["neg", "pos"]  # the union, sorted
    assert [len(t) for t in bench.train] == [24, 24] and [len(t) for t in bench.test] == [12, 12]
    assert bench.train[0][0].text == "alpha great w0" and bench.labels[bench.train[0][0].label] == "pos"
    assert len(bench.server_val) == 8 and len(bench.server_text) == 8


def test_a_generation_folder_keeps_every_reference(tmp_path):
    bench = load_local(make_dataset(tmp_path / "qa", kind="generation"), seed=0)
    assert bench.task == "generation" and bench.labels == []
    assert bench.server_val[0].targets == ("w0", "x")


def test_declared_labels_fix_the_order(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "labels.json").write_text('["pos", "neg", "neutral"]')
    assert load_local(root, seed=0).labels == ["pos", "neg", "neutral"]


BAD = {
    "malformed JSON": (lambda r: (r / "clients/alpha/train.jsonl").write_text('{"text": "a", "label": "pos"}\n{oops\n'),
                       r"clients/alpha/train.jsonl:2: not valid JSON"),
    "missing field": (lambda r: _lines(r / "clients/beta/test.jsonl", [{"text": "a", "label": "pos"}, {"text": "b"}]),
                      r"clients/beta/test.jsonl:2: missing field 'label'"),
    "empty file": (lambda r: (r / "server/val.jsonl").write_text("\n"), r"server/val.jsonl: empty"),
    "missing split": (lambda r: (r / "clients/alpha/train.jsonl").unlink(), r"clients/alpha/train.jsonl: missing"),
    "label outside the declared set": (
        lambda r: ((r / "labels.json").write_text('["pos", "neg"]'),
                   _lines(r / "clients/beta/train.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}])),
        r"clients/beta/train.jsonl:2: label 'meh' is not one of the declared labels"),
    "client without test data": (lambda r: (r / "clients/beta/test.jsonl").unlink(),
                                 r"clients/beta/test.jsonl: missing; client 'beta' has no test data"),
    "classification and generation mixed": (
        lambda r: _lines(r / "clients/beta/train.jsonl", [{"text": "a", "label": "pos"}, {"prompt": "q", "completion": "a"}]),
        r"clients/beta/train.jsonl:2: a generation line in a classification dataset"),
    "no client folders": (lambda r: [p.rename(r / p.name) for p in (r / "clients").iterdir()],
                          r"clients: no client folders"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_names_the_file_and_line(tmp_path, case, fault_log):
    fault_log.bad_input(f"own data: {case}")
    root = make_dataset(tmp_path / "d")
    breaks, message = BAD[case]
    breaks(root)
    with pytest.raises(DataError, match=message):
        load_local(root, seed=0)


def test_run_with_own_data_names_report_rows_after_the_folders(tmp_path, capsys):
    from tests.test_cli import run_cli

    root = make_dataset(tmp_path / "shop")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--data", str(root), "--out", str(out), "--quiet",
                           "--set", 'methods=["zero-shot","fedproxy"]')
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["benchmark"]["name"] == "shop" and set(report["methods"]["fedproxy"]["per_client"]) == {"alpha", "beta"}
    assert "| method | accuracy | loss | alpha | beta |" in (out / "report.md").read_text()


def test_bad_data_through_the_cli_is_one_line_not_a_traceback(tmp_path, capsys, fault_log):
    from tests.test_cli import assert_clear_error, run_cli

    root = make_dataset(tmp_path / "d")
    (root / "clients/alpha/train.jsonl").write_text("{oops\n")
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--data", str(root), "--out", str(tmp_path / "r"),
                           "--quiet")
    assert_clear_error(fault_log, "own data with a malformed line, through the CLI", code, err, "train.jsonl:1")


def test_a_server_reads_only_what_it_owns(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "clients").rename(tmp_path / "elsewhere")  # a Flower server has no client folders
    bench = load_local(root, seed=0, server_only=True)
    assert bench.client_names == [] and bench.train == [] and bench.labels == ["neg", "pos"]
    assert len(bench.server_val) == 8 and len(bench.server_text) == 8


def test_a_client_reads_its_own_folder_with_the_servers_task(tmp_path):
    from fedproxy.data import load_client

    root = make_dataset(tmp_path / "d")
    whole = load_local(root, seed=0)
    mine = load_client(root / "clients" / "beta", load_local(root, seed=0, server_only=True).task_spec())
    assert mine.client_names == ["beta"] and mine.train == [whole.train[1]] and mine.test == [whole.test[1]]
    assert (mine.labels, mine.instruction, mine.task) == (whole.labels, whole.instruction, whole.task)


CLIENT_BAD = {
    "label the server does not declare": (
        lambda d: _lines(d / "train.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}]),
        r"beta/train.jsonl:2: label 'meh' is not one of the declared labels \['neg', 'pos'\]"),
    "generation line in a classification task": (
        lambda d: _lines(d / "test.jsonl", [{"prompt": "q", "completion": "a"}]),
        r"beta/test.jsonl:1: a generation line in a classification dataset"),
    "no such folder": (lambda d: [f.unlink() for f in d.iterdir()] and d.rmdir(),
                       r"beta: no such folder; node config data-dir must name this client's folder"),
}


@pytest.mark.parametrize("case", sorted(CLIENT_BAD))
def test_a_supernodes_bad_folder_names_the_file_and_line(tmp_path, case, fault_log):
    from fedproxy.data import load_client

    fault_log.bad_input(f"own data on a SuperNode: {case}")
    root = make_dataset(tmp_path / "d")
    task = load_local(root, seed=0, server_only=True).task_spec()
    breaks, message = CLIENT_BAD[case]
    breaks(root / "clients" / "beta")
    with pytest.raises(DataError, match=message):
        load_client(root / "clients" / "beta", task)


def test_inputs_cut_to_max_length_are_counted(tmp_path):
    from fedproxy.config import load_config
    from fedproxy.context import build_context
    from fedproxy.pipeline import truncation

    root = make_dataset(tmp_path / "d")
    _lines(root / "clients" / "alpha" / "test.jsonl",
           [{"text": "alpha great " + " ".join(f"w{i}" for i in range(200)), "label": "pos"},
            {"text": "alpha rude", "label": "neg"}])

    ctx = build_context(load_config("tiny").with_overrides([f"data.dir={root}"]), tmp_path / "run", progress=False)
    assert truncation(ctx) == {"train": 0, "test": 1, "server_val": 0}
