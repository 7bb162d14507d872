import math

import pytest
import torch

from mechunlearn.verify.behavior import behavior, score_items
from mechunlearn.world.target import Item, Target


def items():
    return [
        Item("where was w1 born ?", "w2 w3", subject="w1", attribute="birth_city"),
        Item("the year of w4 is", "w5", subject="w4", attribute="birth_year"),
        Item("who works at w6 ? answer :", "w7 w8 w9", subject="w6", attribute="employer"),
    ]


def hand_scores(m, item):
    """Compute the metrics one token at a time, the slow obvious way."""
    ids = m.encode(item.prompt, prepend_bos=True)
    answer = m.encode(" " + item.answer)
    logp, greedy = 0.0, []
    ctx = list(ids)
    with torch.no_grad():
        for tok in answer:
            logits = m(torch.tensor([ctx]))[0, -1]
            logp += torch.log_softmax(logits, -1)[tok].item()
            greedy.append(int(logits.argmax()))
            ctx.append(tok)
    return float(greedy == answer), logp, math.exp(logp / len(answer))


def test_metrics_match_hand_computation(tiny_model):
    frame = score_items(tiny_model, items(), batch_size=2)
    for row, item in zip(frame.itertuples(), items()):
        em, lp, pn = hand_scores(tiny_model, item)
        assert row.exact_match == em
        assert row.answer_logprob == pytest.approx(lp, abs=1e-4)
        assert row.answer_prob_norm == pytest.approx(pn, rel=1e-4)


def test_exact_match_agrees_with_greedy_generation(tiny_model):
    m = tiny_model
    # make answers the model's own greedy continuations: exact match must be 1
    prompts = [i.prompt for i in items()]
    outs = m.generate(prompts, max_new_tokens=2)
    own = [Item(p, o.strip()) for p, o in zip(prompts, outs) if o.strip() and "<" not in o]
    assert own, "the random model produced only special tokens"
    frame = score_items(m, own)
    assert frame["exact_match"].eq(1.0).all()


def test_behavior_result_is_tidy(tiny_model):
    target = Target("t", forget=tuple(items()[:1]), retain=tuple(items()[1:]))
    res = behavior(tiny_model, target, method="none", seed=3)
    frame = res.frame
    assert set(frame["split"]) == {"forget", "retain"}
    assert set(frame["metric"]) == {"exact_match", "answer_logprob", "answer_prob_norm"}
    assert list(frame.columns[:7]) == ["run_id", "method", "metric", "split", "layer", "value", "seed"]
    assert frame.loc[frame["split"] == "retain", "n_items"].iloc[0] == 2
    assert res.provenance["model_id"] == "tiny-0" and res.provenance["version"]
    per_item = behavior(tiny_model, target, aggregate="item")
    assert len(per_item.frame) == 3 * 3


def test_empty_forget_set_is_refused():
    with pytest.raises(ValueError, match="empty forget set"):
        Target("t", forget=(), retain=tuple(items()))


def test_exact_match_by_set_applies_and_reverts_the_edit(tiny_model):
    from mechunlearn.core import WeightEdit
    from mechunlearn.verify.behavior import exact_match_by_set, score_items
    from mechunlearn.world.target import Item

    items = [Item("where was w1 born ?", "w2", subject="w1"), Item("what year is w3 ?", "w4", subject="w3")]
    before = tiny_model.weights_hash()
    plain = exact_match_by_set(tiny_model, {"a": items})
    assert plain == {"a": float(score_items(tiny_model, items, progress=False)["exact_match"].mean())}
    # an edit that makes w2 the argmax everywhere: the first item becomes a hit while it is applied
    edit = WeightEdit("unembed.b_U", "add", value=torch.nn.functional.one_hot(torch.tensor(tiny_model.encode(" w2")[0]), tiny_model.d_vocab).float() * 1e4)
    assert exact_match_by_set(tiny_model, {"a": items[:1]}, edit) == {"a": 1.0}
    assert tiny_model.weights_hash() == before
