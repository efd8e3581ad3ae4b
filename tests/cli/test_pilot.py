"""`deskpilot pilot`: guided sessions in the terminal, in flow mode and against the fake OpenAI server."""

from __future__ import annotations

import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from deskpilot.cli.main import app
from deskpilot.cli.pilot import Accept, Escalate, Pause, Respond, parse_answer, split_answers
from deskpilot.pilot import prompts
from deskpilot.pilot.errors import InvalidResponse, UnknownOption
from deskpilot.pilot.schemas import StepOut
from tests.fakes import FakeOpenAIServer, error_reply, json_reply

runner = CliRunner()

OUTLOOK = "Outlook keeps asking for my password"
RUNBOOK = "Outlook keeps asking for credentials (Microsoft 365)"
_BOX = re.compile(r"[│╭╮╰╯─┃━]+")


def flat(output: str) -> str:
    """The output without panel borders and line wrapping, so assertions do not depend on the terminal width."""
    return " ".join(_BOX.sub(" ", output).split())


def pilot(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["pilot", *args], input=input)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_module() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key="test") as server:
        yield server


@pytest.fixture
def openai_server(openai_module: FakeOpenAIServer, demo: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    openai_module.reset()
    monkeypatch.setenv("DESKPILOT_LLM__DEFAULT_MODEL", "openai:gpt-test")
    monkeypatch.setenv("DESKPILOT_LLM__OPENAI__BASE_URL", openai_module.base_url)
    monkeypatch.setenv("DESKPILOT_LLM__OPENAI__API_KEY", "test")
    monkeypatch.setenv("DESKPILOT_LLM__TIMEOUT_S", "5")
    return openai_module


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


def only_session(path: Path) -> dict[str, Any]:
    found = rows(path, "SELECT id, status, mode, resolution_summary, resolution_action, user_id, client_id, "
                       "total_input_tokens FROM sessions")
    assert len(found) == 1
    keys = ("id", "status", "mode", "resolution_summary", "resolution_action", "user_id", "client_id",
            "input_tokens")
    return dict(zip(keys, found[0], strict=True))


def user_id(path: Path, email: str) -> str:
    return str(rows(path, "SELECT id FROM users WHERE email = ?", email)[0][0])


# --- flow mode ------------------------------------------------------------------------------


def test_flow_mode_walks_the_starter_runbook_to_resolution_and_prints_the_documentation(demo: Path) -> None:
    result = pilot(OUTLOOK, "--answers", "2; 1; n: still prompts; n; y new profile connects; y")

    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "Engineer: Liam Lead <lead@northwind.example> · Northwind MSP" in out
    assert "Mode: flow — no LLM is configured" in out
    assert re.search(rf"Matched flow: {re.escape(RUNBOOK)} \(score 0\.\d\d\)", out)
    assert "Step 1 · Question" in out
    assert "1. Web sign-in fails too 2. Only desktop Outlook" in out
    # The profile reset action renders its script template with the runbook's default parameters.
    assert "Step 5 · Action · run a script" in out
    assert "Script: Create a fresh Outlook profile (outlook-profile-reset)" in out
    assert "$ProfileName = 'Outlook-New'" in out
    assert "Expected outcome: The new profile connects without credential prompts." in out
    assert "Step 6 · Suggested resolution" in out
    assert "Follow-up: • Re-add shared mailboxes or PST files" in out
    # The documentation: steps with the engineer's answers and outcomes, the resolution, the follow-ups.
    assert "Diagnostic steps" in out
    assert "Engineer response: Only desktop Outlook" in out
    assert "Outcome: Did not resolve — still prompts" in out
    assert "Outcome: Succeeded — new profile connects" in out
    assert "Follow-up recommendations" in out
    assert "Session resolved:" in out

    session = only_session(demo)
    assert session["status"] == "resolved"
    assert session["mode"] == "flow"
    assert session["resolution_summary"].startswith("Corrupt Outlook profile replaced with a new one")
    assert session["resolution_action"] is None
    assert str(uuid.UUID(session["user_id"])) == str(uuid.UUID(user_id(demo, "lead@northwind.example")))
    steps = rows(demo, "SELECT selected_option, action_result, action_details FROM session_steps s "
                       "JOIN sessions p ON p.id = s.session_id ORDER BY step_order")
    assert steps == [("desktop-only", None, None), ("password", None, None), (None, "failure", "still prompts"),
                     (None, "failure", None), (None, "success", "new profile connects"), (None, None, None)]


def test_fp021_start_prints_similar_resolved_sessions(demo: Path) -> None:
    answers = "2; 1; n: still prompts; n; y new profile connects; y"
    first = pilot(OUTLOOK, "--answers", answers)
    assert first.exit_code == 0, first.output
    assert "Similar session:" not in flat(first.output)

    second = pilot(OUTLOOK, "--answers", answers)
    assert second.exit_code == 0, second.output
    out = flat(second.output)
    assert re.search(r"Similar session: Outlook keeps asking for my password → Corrupt Outlook profile replaced "
                     r".*\(score 0\.9\d, resolved \d{4}-\d\d-\d\d; [0-9a-f-]{36}\)", out)
    assert out.count("Similar session:") == 1


def test_answers_file_by_option_value_as_another_engineer_for_a_client_without_resolving(demo: Path) -> None:
    answers = demo.parent / "answers.txt"
    answers.write_text("# Outlook on the web works\ndesktop-only\n\nPassword changed recently\nyes\ny\n")
    log = demo.parent / "outlook.log"
    log.write_text("Outlook status: Need Password\n")

    result = pilot(OUTLOOK, "--answers-file", str(answers), "--as", "ALEX@northwind.example",
                   "--client", "contoso dental", "--log", str(log), "--no-resolve")

    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "Engineer: Alex Engineer <alex@northwind.example>" in out
    assert "Client: Contoso Dental" in out
    assert "Resolution accepted. The session stays open (--no-resolve)" in out
    assert "Time spent so far" in out
    session = only_session(demo)
    assert session["status"] == "active"
    assert str(uuid.UUID(session["user_id"])) == str(uuid.UUID(user_id(demo, "alex@northwind.example")))
    assert session["client_id"] is not None
    intake = rows(demo, "SELECT intake FROM sessions")[0][0]
    assert "Need Password" in intake


def test_with_celery_the_resolved_session_is_queued_for_the_flywheel(demo: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKPILOT_JOBS__BACKEND", "celery")
    monkeypatch.setenv("DESKPILOT_JOBS__BROKER_URL", "memory://")

    result = pilot(OUTLOOK, "--answers", "web-too;y;y")

    assert result.exit_code == 0, result.output
    assert "Queued for the knowledge flywheel" in flat(result.output)
    assert rows(demo, "SELECT status, analysis_status FROM sessions") == [("resolved", "pending")]


def test_running_out_of_answers_pauses_the_session_with_exit_code_3(demo: Path) -> None:
    result = pilot(OUTLOOK, "--answers", "2")

    assert result.exit_code == 3, result.output
    session = only_session(demo)
    out = flat(result.output)
    assert "Step 2 · Question" in out
    assert "No answers left." in out
    assert "Session paused." in out
    assert f"/pilot/{uuid.UUID(session['id'])}" in out
    assert f"POST /api/v1/sessions/{uuid.UUID(session['id'])}/resume" in out
    assert session["status"] == "paused"


def test_escalating_hands_the_session_to_the_team(demo: Path) -> None:
    result = pilot(OUTLOOK, "--answers", "1; n; e sign-in log shows a Conditional Access block")

    assert result.exit_code == 3, result.output
    out = flat(result.output)
    assert "Escalation reason" in out
    assert "sign-in log shows a Conditional Access block" in out
    assert "Session escalated to the team (3 notified)" in out
    assert only_session(demo)["status"] == "requesting_escalation"


def test_an_unknown_option_in_the_answers_is_an_error(demo: Path) -> None:
    result = pilot(OUTLOOK, "--answers", "7")

    assert result.exit_code == 1, result.output
    assert "unknown_option: There is no option 7: choose 1-2" in flat(result.output)
    assert "The session is still open" in result.output
    assert only_session(demo)["status"] == "active"

    free_text = pilot(OUTLOOK, "--answers", "maybe")
    assert free_text.exit_code == 1
    assert "unknown_option: 'maybe' is not one of this step's options" in flat(free_text.output)


def test_at_the_prompt_a_wrong_answer_is_asked_again(demo: Path) -> None:
    result = pilot(OUTLOOK, input="7\nsomething else\ns\n2\nq\n")

    assert result.exit_code == 3, result.output
    out = flat(result.output)
    assert "unknown_option: There is no option 7" in out
    assert "unknown_option: 'something else' is not one of this step's options" in out
    assert "skip_not_allowed: This step cannot be skipped" in out
    assert "Step 2 · Question" in out
    assert "Session paused." in out
    steps = rows(demo, "SELECT selected_option FROM session_steps ORDER BY step_order")
    assert steps == [("desktop-only",), (None,)]


def test_at_the_prompt_a_rejected_last_runbook_step_can_be_escalated(demo: Path) -> None:
    result = pilot(OUTLOOK, input="1\ny\nn sign-in works\nr\ne nothing in the sign-in log\n")

    assert result.exit_code == 3, result.output
    out = flat(result.output)
    assert "step_generation_failed: The runbook has no further step and no LLM answered" in out
    assert "Your answer is saved. e <reason> escalate to the team · q pause and quit" in out
    assert "r retry ·" not in out
    assert "Session escalated to the team" in out
    assert only_session(demo)["status"] == "requesting_escalation"


def test_a_closed_terminal_pauses_the_session(demo: Path) -> None:
    result = pilot(OUTLOOK, input="")
    assert result.exit_code == 3, result.output
    assert only_session(demo)["status"] == "paused"


def test_no_llm_and_no_flow_is_a_clear_error(demo: Path) -> None:
    result = pilot("The espresso machine in the break room makes a grinding noise", "--answers", "1")

    assert result.exit_code == 1, result.output
    out = flat(result.output)
    assert "no_llm_no_flow: No LLM provider is configured and no flow matches this problem" in out
    assert "What was entered is saved in session" in out
    assert "Traceback" not in result.output
    assert only_session(demo)["status"] == "active"


def test_setup_errors_name_the_fix(db_path: Path, demo_template: Path) -> None:
    missing = pilot(OUTLOOK)
    assert missing.exit_code == 1
    assert "database_missing" in missing.output
    assert not db_path.exists()

    sqlite3.connect(db_path).close()
    empty = pilot(OUTLOOK)
    assert empty.exit_code == 1
    assert "database_not_migrated" in empty.output
    assert "deskpilot migrate" in flat(empty.output)

    shutil.copyfile(demo_template, db_path)
    for args, code in (
        (["--as", "nobody@example.com"], "user_not_found"),
        (["--client", "Initech"], "client_not_found"),
        (["--answers", "1", "--answers-file", "a.txt"], "invalid_arguments"),
        (["--answers-file", "missing.txt"], "answers_file_unreadable"),
        (["--log", "missing.log"], "log_unreadable"),
    ):
        result = pilot(OUTLOOK, *args)
        assert result.exit_code == 1, (args, result.output)
        assert code in result.output, (args, result.output)
        assert "Traceback" not in result.output

    other = runner.invoke(app, ["admin", "bootstrap", "--account", "Initech", "--email", "bill@initech.example",
                                "--name", "Bill", "--no-password"])
    assert other.exit_code == 0, other.output
    ambiguous = pilot(OUTLOOK)
    assert ambiguous.exit_code == 1
    assert "user_ambiguous" in ambiguous.output
    assert "--as EMAIL" in flat(ambiguous.output)


# --- AI mode --------------------------------------------------------------------------------


def _classification() -> Any:
    return json_reply({"problem_summary": "Outlook prompts for the password again and again",
                       "problem_domain": "m365", "key_symptoms": ["password prompt"], "urgency": "high"},
                      input_tokens=60, output_tokens=20)


def _question() -> Any:
    return json_reply({
        "type": "question", "content": "Does the prompt appear in Outlook on the web too?",
        "reasoning": "split account from client", "context_message": "Tells account problems from client problems",
        "options": [{"label": "Yes, web too", "value": "web"}, {"label": "Desktop only", "value": "desktop"}],
        "allow_free_text": True, "allow_skip": True, "confidence": 0.55,
    }, input_tokens=900, output_tokens=80)


def _script_action(template_id: str) -> Any:
    return json_reply({
        "type": "action", "content": "Create a fresh Outlook profile with the script",
        "context_message": "A corrupt profile keeps prompting", "action_type": "script_generation",
        "template_id": template_id, "pre_filled_params": {"profile_name": "Outlook-Fresh"},
        "expected_outcome": "Outlook connects without prompting", "confidence": 0.75,
    }, input_tokens=950, output_tokens=90)


def _resolution() -> Any:
    return json_reply({
        "type": "resolution_suggestion", "content": "The new profile connects: the old one was corrupt",
        "resolution_summary": "Corrupt Outlook profile; replaced it with a fresh one",
        "follow_up_recommendations": ["Remove the old profile next week"], "confidence": 0.93,
    }, input_tokens=1000, output_tokens=70)


def _messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    def text(content: Any) -> str:
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)

    return [(m["role"], text(m["content"])) for m in body["messages"]]


def test_ai_mode_runs_the_session_against_the_model(openai_server: FakeOpenAIServer, demo: Path) -> None:
    template_id = str(uuid.UUID(rows(demo, "SELECT id FROM script_templates WHERE slug = 'outlook-profile-reset'")
                                [0][0]))
    openai_server.enqueue(_classification(), _question(), _script_action(template_id), _resolution())

    result = pilot(OUTLOOK, "--answers", "2;y new profile connects;y replaced the profile")

    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "Mode: AI — openai:gpt-test" in out
    assert "Problem: Outlook prompts for the password again and again (m365 · high urgency)" in out
    assert re.search(rf"Matched flow: {re.escape(RUNBOOK)} \(score 0\.\d\d\)", out)
    assert "Does the prompt appear in Outlook on the web too?" in out
    assert "Tells account problems from client problems" in out
    assert "1. Yes, web too 2. Desktop only" in out
    assert "Step 2 · Action · run a script" in out
    assert "$ProfileName = 'Outlook-Fresh'" in out
    assert "Resolution: Corrupt Outlook profile; replaced it with a fresh one" in out
    assert "Remove the old profile next week" in out
    assert "Engineer response: Desktop only" in out
    assert "Session resolved:" in out

    requests = openai_server.requests
    assert [r.path for r in requests] == ["/v1/chat/completions"] * 4
    assert {r.headers["authorization"] for r in requests} == {"Bearer test"}
    assert {r.body["model"] for r in requests} == {"gpt-test"}
    classify = _messages(requests[0].body)
    assert classify[0] == ("system", prompts.CLASSIFICATION_PROMPT)
    assert OUTLOOK in classify[-1][1]
    first_step = _messages(requests[1].body)
    assert first_step[0][0] == "system"
    assert RUNBOOK in first_step[0][1]
    assert template_id in first_step[0][1]
    assert "Outlook prompts for the password again and again" in first_step[-1][1]
    assert _messages(requests[2].body)[-1] == ("user", "Selected: Desktop only")
    assert _messages(requests[3].body)[-1] == ("user", "Action succeeded.\nDetails: new profile connects")

    session = only_session(demo)
    assert (session["status"], session["mode"]) == ("resolved", "ai")
    assert session["resolution_summary"] == "Corrupt Outlook profile; replaced it with a fresh one"
    assert session["resolution_action"] == "replaced the profile"
    assert session["input_tokens"] == 60 + 900 + 950 + 1000
    assert rows(demo, "SELECT count(*) FROM llm_calls")[0][0] == 4


def test_ai_mode_a_failed_step_can_be_retried_at_the_prompt(openai_server: FakeOpenAIServer, demo: Path) -> None:
    openai_server.enqueue(_classification(), _question(), error_reply(400, "context too long"), _resolution())

    result = pilot(OUTLOOK, input="2\nr\ny\n")

    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "step_generation_failed: The next step could not be generated" in out
    assert "Your answer is saved. r retry · e <reason> escalate to the team · q pause and quit" in out
    assert "Session resolved:" in out
    assert only_session(demo)["status"] == "resolved"
    assert len(openai_server.requests) == 4


def test_ai_mode_a_failed_step_with_scripted_answers_is_an_error(openai_server: FakeOpenAIServer,
                                                                  demo: Path) -> None:
    openai_server.enqueue(_classification(), _question(), error_reply(400, "context too long"))

    result = pilot(OUTLOOK, "--answers", "2;y")

    assert result.exit_code == 1, result.output
    out = flat(result.output)
    assert "step_generation_failed" in out
    assert "What was entered is saved in session" in out
    steps = rows(demo, "SELECT selected_option FROM session_steps")
    assert steps == [("desktop",)]


# --- answer syntax --------------------------------------------------------------------------


def _step(kind: str, **content: Any) -> StepOut:
    options = content.pop("options", [])
    allow_free_text = content.pop("allow_free_text", True)
    allow_skip = content.pop("allow_skip", True)
    return StepOut(
        step_id=uuid.uuid4(), step_order=0, step_type=kind, content={"type": kind, "text": "Do it", **content},
        context_message=None, options=options, allow_free_text=allow_free_text, allow_skip=allow_skip,
        confidence_tier="exploring", confidence_score=0.5, branch_id=None, is_fork_point=False,
        selected_option=None, free_text_input=None, was_skipped=False, action_result=None, action_details=None,
        responded_at=None, created_at=datetime.now(UTC),
    )


QUESTION = _step("question", options=[{"label": "Yes, web too", "value": "web"},
                                      {"label": "Desktop only", "value": "desktop"}])


def test_question_answers_by_number_value_label_free_text_and_skip() -> None:
    def response(raw: str) -> dict[str, Any]:
        decision = parse_answer(QUESTION, raw)
        assert isinstance(decision, Respond)
        return decision.response.model_dump(exclude={"step_id"}, exclude_defaults=True)

    assert response("2") == {"selected_option": "desktop"}
    assert response(" WEB ") == {"selected_option": "web"}
    assert response("desktop only") == {"selected_option": "desktop"}
    assert response("only on the laptop") == {"free_text_input": "only on the laptop"}
    assert response("s") == {"was_skipped": True}
    assert response("e-mail bounces too") == {"free_text_input": "e-mail bounces too"}
    assert parse_answer(QUESTION, "2").response.step_id == QUESTION.step_id  # type: ignore[union-attr]
    assert isinstance(parse_answer(QUESTION, "q"), Pause)
    assert parse_answer(QUESTION, "e stuck here") == Escalate("stuck here")
    with pytest.raises(InvalidResponse, match="Say why you escalate"):
        parse_answer(QUESTION, "e")
    with pytest.raises(UnknownOption, match="There is no option 3: choose 1-2"):
        parse_answer(QUESTION, "3")
    with pytest.raises(InvalidResponse, match="Empty answer"):
        parse_answer(QUESTION, "   ")


def test_runbook_steps_take_only_their_options_and_results() -> None:
    runbook_question = _step("question", options=[{"label": "A", "value": "a"}], allow_free_text=False,
                             allow_skip=False, flow_node_id="scope")
    with pytest.raises(UnknownOption, match=r"'b' is not one of this step's options \(1\. A\)"):
        parse_answer(runbook_question, "b")
    with pytest.raises(InvalidResponse, match="cannot be skipped"):
        parse_answer(runbook_question, "s")
    runbook_action = _step("action", action_type="instruction", flow_node_id="clear")
    with pytest.raises(InvalidResponse, match="Say whether the action worked") as refused:
        parse_answer(runbook_action, "I cleared them")
    assert refused.value.code == "action_result_required"


def test_action_resolution_and_fork_answers() -> None:
    action = _step("action", action_type="info_request")
    for raw, success, details in (("y", True, None), ("yes: it worked", True, "it worked"),
                                  ("n - still prompts", False, "still prompts"), ("No, nothing", False, "nothing")):
        decision = parse_answer(action, raw)
        assert isinstance(decision, Respond)
        assert decision.response.action_result is not None
        assert (decision.response.action_result.success, decision.response.action_result.details) == (success,
                                                                                                       details)
    typed = parse_answer(action, "dsregcmd says AzureAdPrt NO")
    assert isinstance(typed, Respond)
    assert typed.response.free_text_input == "dsregcmd says AzureAdPrt NO"

    suggestion = _step("resolution_suggestion", resolution_summary="Fixed", allow_free_text=False,
                       allow_skip=False)
    assert parse_answer(suggestion, "y") == Accept(None)
    assert parse_answer(suggestion, "yes, cleared the cache") == Accept("cleared the cache")
    assert parse_answer(suggestion, "e") == Escalate("Do it")
    rejected = parse_answer(suggestion, "n still broken")
    assert isinstance(rejected, Respond)
    assert rejected.response.action_result is not None
    assert rejected.response.action_result.success is False
    with pytest.raises(InvalidResponse):
        parse_answer(suggestion, "maybe")

    branch = str(uuid.uuid4())
    fork = _step("fork", options=[{"label": "Token broker", "value": branch}, {"label": "Profile", "value": "p"}],
                 allow_free_text=False, allow_skip=False)
    chosen = parse_answer(fork, "token broker")
    assert isinstance(chosen, Respond)
    assert chosen.response.selected_option == branch
    with pytest.raises(UnknownOption):
        parse_answer(fork, "neither")


def test_answers_are_split_on_semicolons() -> None:
    assert split_answers("2; 1 ;n: still prompts;;y") == ["2", "1", "n: still prompts", "y"]
    assert split_answers(r"y ran it\; no errors;q") == ["y ran it; no errors", "q"]
