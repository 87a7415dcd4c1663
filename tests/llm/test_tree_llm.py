"""The research tree's LLM proposer (tasks/llm/tree.py) against the scripted OpenAI-compatible server: good replies
give proposals that pass the template's static check (the others dropped); a malformed reply raises one clear line,
which the tree turns into the offline proposal."""

from __future__ import annotations

import json

import pytest
from scripted_server import DRIFT_SOURCE, IDEA, babbler, last_user, stage_of

from tasks.llm.tree import LLMProposer, ProposalError, parse_blocks

WIDER = DRIFT_SOURCE.replace("0.7, 1.4", "0.6, 1.5")
NO_PROGRESS = DRIFT_SOURCE.replace("0.5 + progress", "1.0")
FORBIDDEN = "import os\n\n\ndef drift(ratio, advantage, progress):\n    return os.getpid() * ratio\n"


def block(label: str, code: str, lang: str = "python") -> str:
    return f"Label: {label}\n```{lang}\n{code}```\n"


def good(request: dict) -> str:
    stage = stage_of(request)
    if stage == "tree improve":
        return ("Two ideas.\n" + block("wider clip", WIDER) + block("reads files", FORBIDDEN)
                + block("the same again", DRIFT_SOURCE))
    if stage == "tree ablate":
        return block("without the progress factor", NO_PROGRESS) + block("with PPO's clip", WIDER)
    if stage == "tree debug":
        assert "NaN in the loss" in last_user(request)
        return "Fixed:\n" + block("finite again", DRIFT_SOURCE)
    raise AssertionError(stage)


@pytest.fixture
def proposer(serve, client_for):
    def make(script):
        return LLMProposer(client_for(serve(script)))

    return make


def test_good_replies_give_proposals_that_pass_the_static_check(serve, client_for):
    server = serve(good)
    llm = LLMProposer(client_for(server))
    idea = {**IDEA, "source": DRIFT_SOURCE, "tree_node": {"candidate": DRIFT_SOURCE, "score": 0.71,
                                                          "baselines": {"ppo_clip": WIDER}}}
    variants = llm.improve("lpo", idea, "improve/improve wider: final_return 0.71", [DRIFT_SOURCE], 3)
    assert variants == [("wider clip", WIDER)]  # the forbidden import and the candidate itself dropped
    assert llm.ablate("lpo", idea, DRIFT_SOURCE) == [("without the progress factor", NO_PROGRESS),
                                                     ("with PPO's clip", WIDER)]
    assert llm.debug("lpo", idea, DRIFT_SOURCE, "NaN in the loss at update 3") == DRIFT_SOURCE
    assert server.stages() == ["tree improve", "tree ablate", "tree debug"]
    improve_prompt = last_user(server.requests[0])
    assert "mirror learning" in improve_prompt.lower()  # the template's task text
    assert "final_return 0.71" in improve_prompt and "Already tried" in improve_prompt
    assert "ppo_clip" in last_user(server.requests[1])
    assert llm.source == "llm"


@pytest.mark.parametrize("method", ["improve", "ablate", "debug"])
def test_a_malformed_reply_raises_one_clear_line(proposer, method):
    llm = proposer(babbler)
    args = {"improve": ("summary", [], 2), "ablate": (DRIFT_SOURCE,), "debug": (DRIFT_SOURCE, "NaN")}[method]
    with pytest.raises(ProposalError) as err:
        getattr(llm, method)("lpo", {**IDEA, "source": DRIFT_SOURCE}, *args)
    message = str(err.value)
    assert message == f"tree {method}: the reply holds no fenced code block" and "\n" not in message


def test_rejected_code_or_a_failed_call_is_a_clear_error_too(proposer, serve, client_for):
    llm = proposer(lambda request: block("reads files", FORBIDDEN))
    with pytest.raises(ProposalError, match=r"^tree ablate: no proposal passes the static check \(reads files: "):
        llm.ablate("lpo", IDEA, DRIFT_SOURCE)
    down = LLMProposer(client_for(serve(lambda request: {"status": 500})))
    with pytest.raises(ProposalError, match=r"^tree debug: tree: the model call failed"):
        down.debug("lpo", IDEA, DRIFT_SOURCE, "NaN")


def test_a_parametric_template_gets_json_blocks(proposer):
    more = json.dumps({"method": "hades", "n_pairs": 8})
    reply = "Label: more pairs\n```\n" + more + "\n```\nLabel: broken\n```\n{\"n\": \n```\n"
    assert parse_blocks(reply) == [("more pairs", more), ("broken", '{"n":')]
    llm = proposer(lambda request: reply if "JSON object in one" in last_user(request) else "no")
    idea = {**IDEA, "source": json.dumps({"method": "hades", "n_pairs": 4})}
    assert llm.improve("hades", idea, "", [], 2) == [("more pairs", more)]  # the broken JSON dropped


def test_the_tree_falls_back_to_the_offline_proposal_and_says_why(proposer):
    """``jaxlib_kernels.tree.stages.propose``: the model's proposals when usable, else the offline ones recorded as
    ``llm-fallback`` with the one-line reason."""
    from jaxlib_kernels.templates import make
    from jaxlib_kernels.tree import stages

    template = make("lpo")
    idea = {**IDEA, "source": DRIFT_SOURCE, "tree_node": {"candidate": DRIFT_SOURCE, "baselines": {}}}
    args = ("lpo", idea, "", [DRIFT_SOURCE], 2)
    assert stages.propose(template, proposer(good), "improve", args, 2) == ([("wider clip", WIDER)], "llm", None)
    proposals, source, why = stages.propose(template, proposer(babbler), "improve", args, 2)
    assert source == "llm-fallback" and why == "ProposalError: tree improve: the reply holds no fenced code block"
    assert proposals == stages.propose(template, None, "improve", args, 2)[0] and proposals


def test_a_model_breaks_exact_ties_only_with_a_valid_choice(proposer):
    from jaxlib_kernels.tree.record import Node

    nodes = [Node(id=f"n{i}", parent=None, stage="improve", kind="improve", method="m", role="candidate",
                  candidate=text, label=label, score=0.5) for i, (label, text) in
             enumerate((("wider", WIDER), ("as drafted", DRIFT_SOURCE)))]
    assert proposer(lambda request: '{"choice": 2}').tie_break(nodes) == "n1"
    assert proposer(lambda request: '{"choice": 7}').tie_break(nodes) is None
    assert proposer(babbler).tie_break(nodes) is None


@pytest.mark.parametrize("template_name", ["lpo", "dpo"])
def test_a_writeup_section_prompt_states_the_tree(template_name, tmp_path):
    """Every writeup_section.j2 (the generic one, lpo's) tells the model what the tree tuned, ablated and
    replicated, so that its sections do not say the methods share fixed hyperparameters."""
    from jaxlib_kernels.templates import make
    from tasks import treefacts
    from tasks.runtime.llm import render

    template = make(template_name)
    record = {"metric": {"name": "final_return", "maximize": True}, "search": {"seeds": [1000, 1001]},
              "replication_seeds": [0, 1], "nodes": [{"id": "a", "stage": "improve", "score": 0.5}],
              "final": {"node": "a"}, "ablation": [{"label": "without the relu", "score": 0.25}],
              "tuning": {m: {"role": r, "evaluations": 4, "score_before": 0.4, "score_after": 0.5}
                         for m, r in (("ours", "candidate"), ("ppo_clip", "baseline"))}}
    tree = treefacts.summarize(record, treefacts.metric_of(record, template), None,
                               {"s": {"n": {"ours": 2, "ppo_clip": 2}}})
    ctx = {"title": "Method", "paper_title": "t", "guidance": "", "idea": IDEA, "source": DRIFT_SOURCE,
           "results": "R", "figures": [], "citations": [], "written": [], "words": 200, "template": template}
    text = " ".join(render("writeup_section.j2", template_name, tree=tree, **ctx).split())
    assert "Each method's hyperparameters were tuned (4 evaluations each)" in text
    assert "without the relu: 0.250 (-0.250)" in text and "replication on fresh seeds" in text
    assert "research tree" not in render("writeup_section.j2", template_name, tree=None, **ctx)


def test_a_spent_budget_stops_the_tree_instead_of_falling_back(serve, client_for):
    """With ``--max-cost`` spent the proposer's call raises ``BudgetExceeded`` and the tree's fallback lets it
    through (the run then stops cleanly); an ordinary failure falls back (the test above)."""
    from jaxlib_kernels.templates import make
    from jaxlib_kernels.tree import stages
    from tasks.runtime.llm import BudgetExceeded

    client = client_for(serve(good))
    client.ledger.exceeded = "cost budget spent: $0.0100 of --max-cost $0.01"
    llm = LLMProposer(client)
    idea = {**IDEA, "source": DRIFT_SOURCE, "tree_node": {"candidate": DRIFT_SOURCE, "score": 0.5, "baselines": {}}}
    with pytest.raises(BudgetExceeded):
        llm.improve("lpo", idea, "", [], 2)
    with pytest.raises(BudgetExceeded):
        stages.propose(make("lpo"), llm, "improve", ("lpo", idea, "", [], 2), 2)
