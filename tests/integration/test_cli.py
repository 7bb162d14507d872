"""The `mechunlearn` command on the small bios-tiny world."""

import pandas as pd
import pytest

from mechunlearn.cli import main, parser

pytestmark = pytest.mark.slow


def test_build_then_eval_writes_a_tidy_csv(tmp_path, capsys):
    assert main(["build-model", "bios-tiny", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "heldout_templates" in out and "unknown_nonexistent" in out
    path = tmp_path / "table.csv"
    assert main(["eval", "bios-tiny", "--quick", "--split", "forget", "--split", "holdout", "--out", str(path)]) == 0
    frame = pd.read_csv(path)
    assert set(frame["split"]) == {"forget", "holdout"}
    assert set(frame["metric"]) == {"exact_match", "answer_logprob", "answer_prob_norm"}
    forget_em = frame.query("split == 'forget' and metric == 'exact_match'")["value"].item()
    holdout_em = frame.query("split == 'holdout' and metric == 'exact_match'")["value"].item()
    assert forget_em > 0.9 > holdout_em  # it knows trained people, not people it never saw
    assert (tmp_path / "table.csv.provenance.json").exists()


def test_errors_are_clear(capsys):
    assert main(["eval", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build-model", "smollm2-135m", "--retain", "0.1"])


def test_help_describes_options():
    text = parser().format_help()
    assert "build-model" in text and "eval" in text and "demo" in text
    sub = parser()._subparsers._group_actions[0].choices["eval"].format_help()
    assert "--forget-frac" in sub and "held out" in sub
