"""Agent profiles: validation errors name file, key and line; selection; built scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.agents import load_settings
from app.agents.build import script_for
from app.agents.config import AgentConfigError, load_agents, parse_agents
from app.agents.locate import key_lines
from app.config import AgentSettings, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
version = 1
default = "reception"

[agents.reception]
numbers = ["+15550100001"]
tools = ["end_call", "transfer_call", "collect_digits"]
prompt = '''
A prompt with = signs
and [brackets] in it.'''

[agents.reception.transfer]
number = "+15550100999"

[agents.reception.recording]
enabled = true
announcement = "This call is recorded."

[agents.sales]
campaigns = ["spring"]
endpointing.ms = 400
barge_in = { min_words = 3, sure_ms = 900 }
"""


def test_a_good_file_loads_and_selects_by_parameter_campaign_number_default() -> None:
    book = parse_agents(GOOD)
    assert book.select(to_number="+15550100001") == "reception"
    assert book.select(campaign="spring") == "sales"
    assert book.select(to_number="+15550100001", campaign="spring") == "sales"
    assert book.select(to_number="+15550100001", parameter="sales") == "sales"
    assert book.select(to_number="+19999999999", parameter="nobody") == "reception"


def test_the_example_file_in_the_repository_is_valid() -> None:
    book = load_agents(ROOT / "agents.toml")
    assert book.default in book.agents


def test_scripts_carry_tools_policy_and_the_recording_announcement_first() -> None:
    book = parse_agents(GOOD)
    base = AgentSettings()
    reception = script_for(book.get("reception"), base)
    assert reception.greeting == "This call is recorded. " + base.greeting
    assert [t.name for t in reception.tools] == ["end_call", "transfer_call", "collect_digits"]
    assert "[brackets]" in reception.system_prompt
    sales = script_for(book.get("sales"), base)
    assert sales.greeting == base.greeting
    assert (sales.policy.endpointing_ms, sales.policy.barge_in_min_words) == (400, 3)
    assert sales.policy.barge_in_sure_ms == 900


def test_a_profile_overrides_the_environment_field_by_field() -> None:
    """Knobs a profile leaves out come from the environment (UNFINISHED_WAIT_MS, ...), not from
    built-in defaults."""
    book = parse_agents(GOOD)
    env = Settings.from_env({
        "UNFINISHED_WAIT_MS": "3500", "MAX_ENDPOINT_MS": "5000", "BARGE_IN_SURE_MS": "1500",
        "BARGE_IN_MIN_WORDS": "4", "ENDPOINTING_MS": "150", "IDLE_TIMEOUT_S": "20",
    }).agent
    sales = script_for(book.get("sales"), env).policy  # sets endpointing.ms, min_words, sure_ms
    assert (sales.unfinished_wait_ms, sales.max_endpoint_ms) == (3500, 5000)
    assert (sales.endpointing_ms, sales.barge_in_min_words, sales.barge_in_sure_ms) == (400, 3, 900)
    reception = script_for(book.get("reception"), env)
    assert reception.policy.barge_in_sure_ms == 1500 and reception.policy.barge_in_min_words == 4
    assert reception.policy.endpointing_ms == 150 and reception.idle_timeout_s == 20


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("endpointing.ms = 400", "endpointing.ms = 99999"),
         "line 20: agents.sales.endpointing.ms: Input should be less than or equal to 5000"),
        (('campaigns = ["spring"]', 'campains = ["spring"]'),
         "line 19: agents.sales.campains: unknown key"),
        (('number = "+15550100999"', 'number = "555-0199"'),
         "line 12: agents.reception.transfer.number: must be an E.164 phone number"),
        (('default = "reception"', 'default = "front-desk"'),
         "line 2: default: names no agent"),
        (("enabled = true", 'enabled = "yes"'),
         "line 15: agents.reception.recording.enabled: Input should be a valid boolean"),
        (('"transfer_call", "collect', '"transfer", "collect'),
         "line 6: agents.reception.tools: Input should be 'end_call'"),
        (("version = 1", "version = 2"), "line 1: version: must be 1"),
    ],
)
def test_bad_values_name_file_key_and_line(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(AgentConfigError) as caught:
        parse_agents(GOOD.replace(old, new, 1), "conf/agents.toml")
    message = str(caught.value)
    assert message.startswith("conf/agents.toml, ")
    assert expected in message


def test_links_between_keys_are_checked() -> None:
    no_transfer = GOOD.replace('[agents.reception.transfer]\nnumber = "+15550100999"\n', "")
    with pytest.raises(AgentConfigError, match=r"line 6: agents\.reception\.tools: transfer_call"):
        parse_agents(no_transfer)
    twice = GOOD.replace('campaigns = ["spring"]', 'numbers = ["+15550100001"]')
    with pytest.raises(AgentConfigError, match=r"line 19: agents\.sales\.numbers: number also"):
        parse_agents(twice)


def test_broken_toml_reports_its_line() -> None:
    with pytest.raises(AgentConfigError, match=r"agents.toml: invalid TOML: .*line 3"):
        parse_agents('version = 1\ndefault = "a"\n[agents.a\n')


def test_key_lines_skip_multiline_strings_and_arrays() -> None:
    lines = key_lines('a = """\nb = 1\n"""\nc = [\n  "x = 2",\n]\n[t]\nd.e = 3\n')
    assert lines == {("a",): 1, ("c",): 4, ("t",): 7, ("t", "d", "e"): 8, ("t", "d"): 8}


def test_settings_fail_on_a_bad_agents_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(GOOD.replace("endpointing.ms = 400", "endpointing.ms = -1"))
    with pytest.raises(ConfigError, match=r"agents\.toml, line 20: agents\.sales\.endpointing"):
        load_settings({"AGENTS_FILE": str(path)})
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="nope.toml: cannot read"):
        load_settings({"AGENTS_FILE": missing})


def test_serve_refuses_to_start_with_a_bad_agents_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(GOOD.replace("sure_ms = 900", "sure_ms = 900, min_wrods = 2"))
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    env.update(AGENTS_FILE=str(path))
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{path}, line 21: agents.sales.barge_in.min_wrods: unknown key" in done.stderr
    assert "Traceback" not in done.stderr
