"""Keyword topics: the matcher's rules, real papers, config errors and `digest topics test`."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import TopicConfig, load_config
from digest.errors import ConfigError, KeywordsError
from digest.jobs import ingest_file, try_topic
from digest.models import Paper
from digest.source.parse import parse_api
from digest.store import Store
from digest.topics import Matcher, match_topics, parse_keywords, words
from tests.support.paths import REAL

CAPTURE = REAL / "api-daily_papers-2025-10-03.reserialised.json"


def _paper(**kw: Any) -> Paper:
    kw.setdefault("id", "2501.00001")
    kw.setdefault("title", "A paper")
    return Paper(**kw)


def _terms(topic: dict[str, Any], paper: dict[str, Any]) -> tuple[str, ...] | None:
    """The terms `topic` matched on `paper`, or None when it does not take the paper."""
    matches = Matcher([TopicConfig(name="t", **topic)]).match(_paper(**paper))
    return matches[0].terms if matches else None


# (case id, topic settings, paper fields, terms expected to hit or None for no match)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...] | None]] = [
    # word boundaries
    ("rl-not-in-url", {"keywords": ["RL"]}, {"title": "A URL shortener"}, None),
    ("rl-word", {"keywords": ["RL"]}, {"title": "Scaling RL for reasoning"}, ("RL",)),
    ("rl-case", {"keywords": ["rl"]}, {"title": "Offline RL, revisited"}, ("rl",)),
    ("rl-in-parens", {"keywords": ["RL"]}, {"abstract": "learning (RL) works"}, ("RL",)),
    ("agent-not-agents", {"keywords": ["agent"]}, {"title": "LLM Agents at work"}, None),
    ("agent-not-agentic", {"keywords": ["agent"]}, {"title": "Agentic search"}, None),
    ("agent-word", {"keywords": ["agent"]}, {"title": "One agent, many tools"}, ("agent",)),
    ("digits", {"keywords": ["GPT-4"]}, {"title": "Beating GPT-4o"}, None),
    ("digits-word", {"keywords": ["GPT-4"]}, {"title": "Beating gpt 4 on math"}, ("GPT-4",)),
    # prefix forms
    ("prefix-agents", {"keywords": ["agent*"]}, {"title": "LLM Agents at work"}, ("agent*",)),
    ("prefix-agentic", {"keywords": ["agent*"]}, {"title": "Agentic search"}, ("agent*",)),
    ("prefix-self", {"keywords": ["agent*"]}, {"title": "An agent"}, ("agent*",)),
    ("prefix-not-inside", {"keywords": ["agent*"]}, {"title": "Multiagent play"}, None),
    ("prefix-hyphen-word", {"keywords": ["agent*"]}, {"title": "Multi-agent play"}, ("agent*",)),
    (
        "prefix-phrase-last-word",
        {"keywords": ["language model*"]},
        {"title": "Small Language Models"},
        ("language model*",),
    ),
    ("prefix-phrase-first-word", {"keywords": ["language model*"]}, {"title": "Language"}, None),
    # phrases
    (
        "phrase",
        {"phrases": ["reinforcement learning"]},
        {"abstract": "We use reinforcement learning to"},
        ("reinforcement learning",),
    ),
    (
        "phrase-words-apart",
        {"phrases": ["reinforcement learning"]},
        {"abstract": "learning by reinforcement"},
        None,
    ),
    (
        "phrase-not-plural",
        {"phrases": ["language model"]},
        {"title": "Large language models"},
        None,
    ),
    (
        "phrase-not-across-authors",
        {"phrases": ["Li Wei"], "fields": ["authors"]},
        {"authors": ("Ming Li", "Wei Zhang")},
        None,
    ),
    # hyphens
    ("hyphen-in-text", {"phrases": ["tool use"]}, {"title": "Tool-Use agents"}, ("tool use",)),
    ("hyphen-in-term", {"keywords": ["tool-use"]}, {"title": "Tool use agents"}, ("tool-use",)),
    (
        "hyphen-compound",
        {"keywords": ["multi-agent"]},
        {"title": "Multi agent RL"},
        ("multi-agent",),
    ),
    ("underscore", {"keywords": ["tool use"]}, {"abstract": "the tool_use API"}, ("tool use",)),
    # exclusions
    (
        "exclude-vetoes",
        {"keywords": ["agent*"], "exclude": ["survey"]},
        {"title": "Agents: a survey"},
        None,
    ),
    (
        "exclude-word-boundary",
        {"keywords": ["agent*"], "exclude": ["survey"]},
        {"title": "Agents that surveyed the web"},
        ("agent*",),
    ),
    (
        "exclude-prefix",
        {"keywords": ["agent*"], "exclude": ["survey*"]},
        {"title": "Agents that surveyed the web"},
        None,
    ),
    (
        "exclude-only-in-fields",
        {"keywords": ["agent*"], "exclude": ["survey"]},
        {"title": "Agents", "ai_summary": "A survey of agents"},
        ("agent*",),
    ),
    (
        "exclude-vetoes-followed-author",
        {"authors": ["Ada Lovelace"], "exclude": ["survey"]},
        {"title": "A survey", "authors": ("Ada Lovelace",)},
        None,
    ),
    # fields selection (default: title, abstract, ai_keywords)
    ("default-not-ai-summary", {"keywords": ["agent"]}, {"ai_summary": "an agent"}, None),
    (
        "ai-summary-chosen",
        {"keywords": ["agent"], "fields": ["ai_summary"]},
        {"ai_summary": "an agent"},
        ("agent",),
    ),
    ("default-ai-keywords", {"keywords": ["GRPO"]}, {"ai_keywords": ("GRPO", "RLVR")}, ("GRPO",)),
    ("title-only", {"keywords": ["agent"], "fields": ["title"]}, {"abstract": "an agent"}, None),
    (
        "authors-field-keyword",
        {"keywords": ["Hinton"], "fields": ["authors"]},
        {"authors": ("Geoffrey Hinton",)},
        ("Hinton",),
    ),
    ("default-not-authors", {"keywords": ["Hinton"]}, {"authors": ("Geoffrey Hinton",)}, None),
    # min upvotes, min stars, has code
    (
        "min-upvotes-below",
        {"keywords": ["RL"], "min_upvotes": 10},
        {"title": "RL", "upvotes": 9},
        None,
    ),
    (
        "min-upvotes-met",
        {"keywords": ["RL"], "min_upvotes": 10},
        {"title": "RL", "upvotes": 10},
        ("RL",),
    ),
    ("min-stars-none", {"keywords": ["RL"], "min_stars": 1}, {"title": "RL"}, None),
    (
        "min-stars-met",
        {"keywords": ["RL"], "min_stars": 100},
        {"title": "RL", "github_stars": 250},
        ("RL",),
    ),
    ("has-code-missing", {"keywords": ["RL"], "has_code": True}, {"title": "RL"}, None),
    (
        "has-code-there",
        {"keywords": ["RL"], "has_code": True},
        {"title": "RL", "github_repo": "https://github.com/a/b"},
        ("RL",),
    ),
    # authors and organisations to follow
    (
        "author-follow",
        {"authors": ["Yann LeCun"]},
        {"title": "World models", "authors": ("Randall Balestriero", "Yann LeCun")},
        ("Yann LeCun",),
    ),
    (
        "author-follow-case-accents",
        {"authors": ["Bjorn Ommer"]},
        {"authors": ("Björn OMMER",)},
        ("Bjorn Ommer",),
    ),
    ("author-follow-other", {"authors": ["Yann LeCun"]}, {"authors": ("Yann Dubois",)}, None),
    (
        "author-not-in-title",
        {"authors": ["Yann LeCun"]},
        {"title": "What Yann LeCun said"},
        None,
    ),
    (
        "org-follow",
        {"organizations": ["NVIDIA"]},
        {"organization": "NVIDIA"},
        ("NVIDIA",),
    ),
    ("org-follow-words", {"organizations": ["Meta"]}, {"organization": "MetaGPT Labs"}, None),
    (
        "keyword-and-author",
        {"keywords": ["diffusion"], "authors": ["Bjorn Ommer"]},
        {"title": "Latent diffusion", "authors": ("Björn Ommer",)},
        ("diffusion", "Bjorn Ommer"),
    ),
    # unicode
    ("casefold-sharp-s", {"keywords": ["Straße"]}, {"title": "STRASSE scenes"}, ("Straße",)),
    ("casefold-sharp-s-rev", {"keywords": ["STRASSE"]}, {"title": "Straße scenes"}, ("STRASSE",)),
    ("accents-in-text", {"keywords": ["naive"]}, {"title": "A naïve baseline"}, ("naive",)),
    ("accents-in-term", {"keywords": ["Gödel"]}, {"title": "The GODEL machine"}, ("Gödel",)),
    ("greek-case", {"keywords": ["ΣΟΦΊΑ"]}, {"title": "σοφία and more"}, ("ΣΟΦΊΑ",)),
    ("nfkc-ligature", {"keywords": ["fine-tuning"]}, {"title": "ﬁne-tuning"}, ("fine-tuning",)),
    ("fullwidth", {"keywords": ["LLM"]}, {"title": "ＬＬＭ agents"}, ("LLM",)),
    # CJK: each Han / kana character is a word, so a CJK term matches inside a run
    ("cjk-inside-run", {"keywords": ["模型"]}, {"title": "大语言模型的推理"}, ("模型",)),
    ("cjk-not-split", {"keywords": ["模型"]}, {"title": "大语言模 型"}, ("模型",)),
    ("cjk-order", {"keywords": ["模型"]}, {"title": "型模"}, None),
    ("kana-dakuten", {"keywords": ["ガ"]}, {"title": "カ"}, None),
    ("hangul-word", {"keywords": ["모델"]}, {"title": "언어 모델"}, ("모델",)),
    ("devanagari-word", {"keywords": ["हिन्दी"]}, {"title": "हिन्दी भाषा"}, ("हिन्दी",)),
]


@pytest.mark.parametrize(
    ("topic", "paper", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_matching_rules(
    topic: dict[str, Any], paper: dict[str, Any], expected: tuple[str, ...] | None
) -> None:
    assert _terms(topic, paper) == expected


def test_words_normalise() -> None:
    assert words("Straße, GÖDEL; naïve tool-use 大模型") == [
        "strasse",
        "godel",
        "naive",
        "tool",
        "use",
        "大",
        "模",
        "型",
    ]


def test_one_pass_for_many_topics_keeps_config_order_and_terms() -> None:
    topics = [
        TopicConfig(name="rl", keywords=["RL", "reinforcement learning"]),
        TopicConfig(name="agents", keywords=["agent*"], exclude=["survey"]),
        TopicConfig(name="agents-survey", keywords=["agent*"], phrases=["survey"]),
        TopicConfig(name="vision", keywords=["image*"]),
    ]
    paper = _paper(title="A survey of agents", abstract="Agents trained with RL (RL).")
    got = Matcher(topics).match(paper)
    assert [(m.topic, m.terms) for m in got] == [
        ("rl", ("RL",)),
        ("agents-survey", ("agent*", "survey")),
    ]


def test_term_without_letters_is_a_config_error_naming_the_topic() -> None:
    with pytest.raises(ConfigError, match=r"'odd'.*'\*'"):
        Matcher([TopicConfig(name="odd", keywords=["*"])])


# -- real papers ------------------------------------------------------------------------

# Five realistic topics, looking at titles and the AI keywords only, so each expectation
# below can be checked by reading the capture's titles and `ai_keywords`.
REAL_TOPICS = [
    TopicConfig(name="agents", keywords=["agent*"], exclude=["benchmark"], fields=["title"]),
    TopicConfig(name="tool-use", phrases=["tool use"], fields=["ai_keywords"]),
    TopicConfig(
        name="rl",
        keywords=["RL", "reinforcement learning", "GRPO"],
        fields=["title", "ai_keywords"],
    ),
    TopicConfig(
        name="video-gen",
        keywords=["diffusion"],
        phrases=["video generation"],
        fields=["title", "ai_keywords"],
        min_upvotes=5,
    ),
    TopicConfig(name="nvidia-code", organizations=["NVIDIA"], has_code=True, min_stars=50),
]

# Papers of the 2025-10-03 list and the topics they land in, and why.
REAL_EXPECTED: list[tuple[str, set[str], str]] = [
    # "Can LLM Agents Trade Stocks": "StockBench" is one word, so the "benchmark" exclusion
    # does not fire; its ai_keywords list "tool use".
    ("2510.02209", {"agents", "tool-use"}, "LLM Agents + tool use"),
    # "Deep Research Agents" but the title says "Benchmark": excluded.
    ("2510.02190", set(), "excluded by benchmark"),
    # "Computer-Use Agents"; its ai_keywords say "benchmark" but agents looks at titles only.
    ("2510.01670", {"agents"}, "exclusion only in the topic's fields"),
    # "Tool-Agentic" in the title (agent*), "tool-use queries" in the keywords (hyphen).
    ("2510.01179", {"agents", "tool-use"}, "Tool-Agentic, tool-use"),
    # "Multi-Stage Reinforcement Learning"; keywords "reinforcement learning (RL)".
    ("2510.02240", {"rl"}, "RL and reinforcement learning"),
    # "RLP" is not "RL", but ai_keywords say "reinforcement learning"; by NVIDIA, with a
    # GitHub repo of 70 stars: also in nvidia-code.
    ("2510.01265", {"rl", "nvidia-code"}, "reinforcement learning + NVIDIA"),
    # "ExGRPO" is not "GRPO" and "RLVR" is not "RL": only "reinforcement learning from
    # verifiable rewards" hits.
    ("2510.02245", {"rl"}, "word boundaries in ExGRPO / RLVR"),
    # Title "Video Generation", keywords "diffusion models"; 43 upvotes.
    ("2510.02283", {"video-gen"}, "video generation + diffusion"),
    # "Audio-Video Generation" (hyphen), 8 upvotes.
    ("2510.01284", {"video-gen"}, "Audio-Video Generation"),
    # "flow-diffusion correspondence" hits, but 2 upvotes < 5.
    ("2510.02315", set(), "min_upvotes"),
    # Molecules with transformers: none of the topics.
    ("2510.02259", set(), "unrelated"),
]


@pytest.fixture(scope="module")
def real_papers() -> dict[str, Paper]:
    listing = parse_api(CAPTURE.read_bytes(), str(CAPTURE))
    return {p.id: p for p in listing.papers}


@pytest.mark.parametrize(
    ("paper_id", "expected", "why"), REAL_EXPECTED, ids=[e[0] for e in REAL_EXPECTED]
)
def test_real_papers_land_in_expected_topics(
    real_papers: dict[str, Paper], paper_id: str, expected: set[str], why: str
) -> None:
    got = match_topics([real_papers[paper_id]], REAL_TOPICS)
    assert {m.topic for m in got.get(paper_id, [])} == expected, why


def test_real_papers_report_the_terms_that_hit(real_papers: dict[str, Paper]) -> None:
    got = match_topics(real_papers.values(), REAL_TOPICS)
    by = {(pid, m.topic): m.terms for pid, ms in got.items() for m in ms}
    assert by[("2510.02209", "agents")] == ("agent*",)
    assert by[("2510.01179", "tool-use")] == ("tool use",)
    assert by[("2510.02240", "rl")] == ("RL", "reinforcement learning")
    assert by[("2510.01265", "rl")] == ("reinforcement learning",)
    assert by[("2510.01265", "nvidia-code")] == ("NVIDIA",)
    # GRPO is in the title and the keywords of the "Group-Relative REINFORCE" paper.
    assert by[("2509.24203", "rl")] == ("reinforcement learning", "GRPO")


# -- config errors (through load_config) ------------------------------------------------


def _config(tmp_path: Path, topic_toml: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("[[topics]]\n" + textwrap.dedent(topic_toml))
    return path


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('name = "agents"\nkeywords = ["agent*", " "]\n', "'agents' has an empty term"),
        ('name = "agents"\nphrases = [""]\n', "'agents' has an empty term"),
        ('name = "agents"\nkeywords = ["*"]\n', "'agents': term '\\*' has no letters or digits"),
        ('name = "agents"\nexclude = ["--"]\nkeywords = ["a"]\n', "term '--' has no letters"),
        ('name = "agents"\nmin_upvotes = 5\n', "'agents' has no terms"),
        ('name = "agents"\nkeywords = ["a"]\nfields = ["body"]\n', "unknown field 'body'"),
    ],
)
def test_bad_topics_are_config_errors_naming_the_topic(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = _config(tmp_path, toml)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path, env={})
    assert str(path) in str(err.value)


def test_good_topic_loads(tmp_path: Path) -> None:
    path = _config(tmp_path, 'name = "agents"\nkeywords = ["agent*"]\nphrases = ["tool use"]\n')
    topic = load_config(path, env={}).topic("agents")
    assert topic.fields == ["title", "abstract", "ai_keywords"]
    assert Matcher([topic]).match(_paper(title="Tool-use agents"))[0].terms == (
        "agent*",
        "tool use",
    )


# -- free-text keywords -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keywords", "phrases"),
    [
        ('a, b*, "a phrase"', ["a", "b*"], ["a phrase"]),
        ('"x, y", RL ,  agent* ', ["RL", "agent*"], ["x, y"]),
        ("single", ["single"], []),
        ('"only phrase"', [], ["only phrase"]),
        ("a,,b,", ["a", "b"], []),
    ],
)
def test_parse_keywords(text: str, keywords: list[str], phrases: list[str]) -> None:
    topic = parse_keywords(text)
    assert (topic.keywords, topic.phrases) == (keywords, phrases)


@pytest.mark.parametrize("text", ['a, "open', "", " , ", '"*"', "-, ?", "rust, C++", "F#"])
def test_parse_keywords_rejects(text: str) -> None:
    with pytest.raises(KeywordsError) as caught:
        parse_keywords(text)
    assert caught.value.text == text and caught.value.problem
    assert "--keywords" not in str(caught.value)  # the library names the value, not a flag


# -- trying a topic on the store, and the CLI -----------------------------------------------


def test_try_topic_window_counts_first_seen(store: Store) -> None:
    # An old capture stored now: its papers are new to us, so they are in the window.
    ingest_file(store, CAPTURE)
    total = store.count_papers()
    trial = try_topic(store, REAL_TOPICS[0], days=30)
    assert trial.total == total > 0
    ids = {sp.paper.id for sp, _ in trial.matches}
    assert "2510.02209" in ids and "2510.02190" not in ids
    # Once first seen long ago (and listed long ago), they fall out of the window.
    store.db.execute("UPDATE papers SET first_seen = '2020-01-01T00:00:00+00:00'")
    trial = try_topic(store, REAL_TOPICS[0], days=30)
    assert (trial.total, trial.matches) == (0, [])


def _cli_setup(tmp_path: Path) -> tuple[Path, int]:
    db = tmp_path / "papers.db"
    store = Store.open(db)
    try:
        seen = ingest_file(store, CAPTURE).seen
    finally:
        store.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\ndatabase = "{db}"\n\n'
        '[[topics]]\nname = "agents"\nkeywords = ["agent*", "tool use"]\n'
        'exclude = ["benchmark"]\nfields = ["title"]\n'
    )
    return config, seen


def _id_lines(output: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^(\d{4}\.\d{4,5}) ", output, re.MULTILINE)]


def test_cli_topics_test_named_topic(tmp_path: Path) -> None:
    config, seen = _cli_setup(tmp_path)
    result = CliRunner().invoke(main, ["--config", str(config), "topics", "test", "agents"])
    assert result.exit_code == 0, result.output
    taken, removed = result.output.split("removed by the filters:\n")
    ids = _id_lines(taken)
    assert "2510.02209" in ids and "2510.01179" in ids
    assert "2510.02190" not in ids  # excluded: "Benchmark" in the title
    assert "2510.02190" in _id_lines(removed) and "removed by exclude 'benchmark'" in removed
    assert "matched: agent*" in result.output
    last = result.output.splitlines()[-1]
    n = len(_id_lines(removed))
    assert last == (
        f"{len(ids)} of {seen} papers in the last 30 days would match topic 'agents'; "
        f"the filters removed {n} more (exclude {n})"
    )


def test_cli_topics_test_keywords(tmp_path: Path) -> None:
    config, seen = _cli_setup(tmp_path)
    args = ["--config", str(config), "topics", "test", "--keywords", 'GRPO, "video generation"']
    result = CliRunner().invoke(main, [*args, "--days", "7"])
    assert result.exit_code == 0, result.output
    ids = _id_lines(result.output)
    # GRPO in the keywords of 2509.24203 and 2510.01623; "Video Generation" in 2510.02283's
    # title and "Audio-Video Generation" in 2510.01284's.
    assert {"2509.24203", "2510.01623", "2510.02283", "2510.01284"} <= set(ids)
    assert "2510.02245" not in ids  # ExGRPO is another word
    assert result.output.splitlines()[-1] == (
        f"{len(ids)} of {seen} papers in the last 7 days would match --keywords"
    )


def test_cli_topics_test_errors(tmp_path: Path) -> None:
    config, _ = _cli_setup(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config), "topics", "test", "nope"])
    assert result.exit_code == 1
    assert "no topic named 'nope' (topics: agents)" in result.output
    assert str(config) in result.output
    result = runner.invoke(main, ["--config", str(config), "topics", "test"])
    assert result.exit_code == 2 and "--keywords" in result.output
    result = runner.invoke(main, ["--config", str(config), "topics", "test", "--keywords", '"x'])
    assert result.exit_code == 1 and "not closed" in result.output
