"""What chat replies change: task lane, facts, suggested fixes, forks and branches, and approvals of tool calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deskpilot.identity.models import Role
from deskpilot.llm.testing import Reply, tool_call
from deskpilot.settings import Settings
from tests.api.chat_support import API, SSE, ChatApp, chat_app, data_of, read_frames, types
from tests.api.test_pilot_support import problem


@pytest.fixture
async def chat(settings: Settings) -> AsyncIterator[ChatApp]:
    async with chat_app(settings) as running:
        yield running


def block(name: str, value: object) -> str:
    return f"[{name}]\n{json.dumps(value)}\n[/{name}]"


async def get(chat: ChatApp, url: str) -> Any:
    response = await chat.http.get(f"{API}{url}", headers=chat.a.headers(Role.ENGINEER))
    assert response.status_code == 200, response.text
    return response.json()


async def test_uc015_uc016_the_task_lane_keeps_ids_across_turns_and_clears(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add("First." + block("QUESTIONS", [{"text": "Which Outlook build?"}, {"text": "Since when?"}]))
    first = (await chat.send(chat_id, "Outlook prompts"))
    lane = next(p["data"] for p in first["parts"] if p["type"] == "data-task-lane")
    ids = {q["text"]: q["id"] for q in lane["questions"]}
    chat.model.add("Second." + block("QUESTIONS", [{"text": "Since when?"}, {"text": "Is MFA on?"}]))
    second = await chat.send(chat_id, "16.0.1")
    lane = next(p["data"] for p in second["parts"] if p["type"] == "data-task-lane")
    assert lane["questions"][0]["id"] == ids["Since when?"]  # same text, same id
    assert lane["questions"][1]["id"] not in ids.values()
    chat.model.add("Nothing to ask now.")
    third = await chat.send(chat_id, "yes")
    assert next(p["data"] for p in third["parts"] if p["type"] == "data-task-lane") is None
    assert (await get(chat, f"/sessions/{chat_id}/task-lane"))["lane"] is None


async def test_uc011_uc017_promoted_facts_point_at_lane_items_and_reach_what_we_know(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add("Check the build." + block("QUESTIONS", [{"text": "Which Outlook build?"}]))
    first = await chat.send(chat_id, "Outlook prompts")
    question_id = next(p["data"] for p in first["parts"] if p["type"] == "data-task-lane")["questions"][0]["id"]
    chat.model.add(
        "Noted: build 2408."
        + block("PROMOTE", {"source_type": "question", "source_ref": question_id, "text": "Outlook is build 2408"})
        + block("PROMOTE", {"source_type": "user_note", "text": "AI may not write user notes"})
        + block("PROMOTE", {"source_type": "ai_synthesis", "source_ref": question_id, "text": "Modern auth is on"})
    )
    second = await chat.send(chat_id, "2408")
    assert second["content"] == "Noted: build 2408."
    added = next(p["data"] for p in second["parts"] if p["type"] == "data-facts")
    facts = (await get(chat, f"/sessions/{chat_id}/facts"))["facts"]
    assert [(f["source_type"], f["text"]) for f in facts] == [
        ("question", "Outlook is build 2408"), ("ai_synthesis", "Modern auth is on")]
    assert facts[0]["source_ref"] == question_id
    assert facts[1]["source_ref"] is None  # ai_synthesis never points at an item
    assert [f["id"] for f in added] == [f["id"] for f in facts]
    # The next turn's prompt carries what we know.
    chat.model.add("Good.")
    await chat.send(chat_id, "next?")
    assert "Outlook is build 2408" in chat.model.seen[-1][0].content


async def test_uc019_uc020_uc021_one_active_fix_proposals_and_resolve(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    fix = {"title": "Reset the Office identity cache", "description": "Remove the cached tokens", "confidence": 72.6}
    chat.model.add("Try this." + block("SUGGEST_FIX", fix))
    first = await chat.send(chat_id, "Outlook prompts")
    proposed = next(p["data"] for p in first["parts"] if p["type"] == "data-suggested-fix")
    assert (proposed["status"], proposed["confidence_pct"]) == ("proposed", 73)
    assert first["content"] == "Try this."

    # A new suggestion supersedes the old one: exactly one active fix (UC-019).
    chat.model.add("Or this." + block("SUGGEST_FIX", {**fix, "title": "Recreate the Outlook profile"}))
    second = await chat.send(chat_id, "still prompts")
    active = next(p["data"] for p in second["parts"] if p["type"] == "data-suggested-fix")
    fixes = await get(chat, f"/sessions/{chat_id}/suggested-fixes")
    assert fixes["active"]["id"] == active["id"]
    assert [h["id"] for h in fixes["history"]] == [proposed["id"]]

    # The AI's outcome is a proposal only (UC-020); the engineer confirms it.
    chat.model.add("Sounds fixed." + block("FIX_OUTCOME", {"fix_id": active["id"], "outcome": "SUCCESS",
                                                           "reason": "no prompt since"}))
    third = await chat.send(chat_id, "no prompt for an hour")
    assert third["content"] == "Sounds fixed."
    fixes = await get(chat, f"/sessions/{chat_id}/suggested-fixes")
    assert fixes["active"]["status"] == "proposed"
    assert fixes["active"]["ai_outcome_proposal"]["outcome"] == "success"
    confirmed = await chat.http.patch(f"{API}/sessions/{chat_id}/suggested-fixes/{active['id']}/outcome",
                                      json={"ai_proposal": "accept"}, headers=chat.a.headers(Role.ENGINEER))
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["fix"]["status"] == "applied_success"


async def test_uc021_resolving_a_chat_marks_the_active_fix_successful(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add("Try this." + block("SUGGEST_FIX", {"title": "Flush DNS", "description": "ipconfig /flushdns",
                                                       "confidence": 60}))
    await chat.send(chat_id, "Intranet does not resolve")
    resolved = await chat.http.post(f"{API}/chats/{chat_id}/resolve", headers=chat.a.headers(Role.ENGINEER))
    assert resolved.json()["status"] == "resolved"
    fixes = await get(chat, f"/sessions/{chat_id}/suggested-fixes")
    assert fixes["active"]["status"] == "applied_success"


async def test_uc008_uc014_a_malformed_block_never_breaks_the_turn(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add('Here we go.\n[SUGGEST_FIX]\n{"title": "x", "confidence": "high"\n[/SUGGEST_FIX]\n'
                   '[FORK]\n{"options": [{"label": "only one"}]}\n[/FORK]\n[QUESTIONS]\nnot json')
    turn = await chat.send(chat_id, "printer offline")
    assert turn["status"] == "complete"
    assert "[SUGGEST_FIX]" not in turn["content"]
    assert "[FORK]" not in turn["content"]
    assert turn["content"].startswith("Here we go.")
    assert not any(p["type"] in ("data-suggested-fix", "data-fork") for p in turn["parts"])
    assert (await get(chat, f"/sessions/{chat_id}/suggested-fixes"))["active"] is None


async def test_uc022_uc023_forks_on_the_main_path_stay_forks_in_a_branch_switch(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    options = [{"label": "Switch port", "description": "errors on the port"},
               {"label": "NIC driver", "description": "old driver"}]
    chat.model.add("Two ideas." + block("FORK", {"fork_reason": "both fit", "options": options}))
    first = await chat.send(chat_id, "Link flaps on PC-12")
    fork = next(p["data"] for p in first["parts"] if p["type"] == "data-fork")
    assert [b["label"] for b in fork["branches"]] == ["Switch port", "NIC driver"]
    assert fork["switched"] is False  # UC-023: the main path does not switch
    detail = await chat.detail(chat_id)
    root_id = detail["session"]["active_branch_id"]
    assert detail["session"]["is_branching"] is True
    assert root_id not in [b["branch_id"] for b in fork["branches"]]
    assert [m["content"] for m in detail["messages"]] == ["Link flaps on PC-12", "Two ideas."]

    # Switch to a branch (the guided sessions' branch API serves chats too), then fork inside it: switches.
    port_id = fork["branches"][0]["branch_id"]
    switched = await chat.http.post(f"{API}/chats/{chat_id}/branches/{port_id}/switch",
                                    headers=chat.a.headers(Role.ENGINEER))
    assert switched.status_code == 200, switched.text
    chat.model.add("On the port branch." + block("FORK", {"fork_reason": "two port causes", "options": [
        {"label": "Duplex mismatch"}, {"label": "Bad cable"}]}))
    second = await chat.send(chat_id, "CRC errors on Gi1/0/12")
    inner = next(p["data"] for p in second["parts"] if p["type"] == "data-fork")
    assert inner["switched"] is True
    assert inner["active_branch_id"] == inner["branches"][0]["branch_id"]
    # UC-022: the prompt on a branch carries its history and its siblings' summaries.
    prompt = chat.model.seen[-1]
    assert "NIC driver" in prompt[0].content
    assert [m.content for m in prompt[1:]][-1] == "CRC errors on Gi1/0/12"
    assert "Two ideas." in [m.content for m in prompt[1:]]


NOTE = {"ticket_id": "48213", "text": "Cleared the Office identity cache; prompts stopped.", "internal": True}


async def _paused(chat: ChatApp, chat_id: str) -> dict[str, Any]:
    chat.model.add(Reply(text="I can post that to the ticket.", tool_calls=(tool_call("post_ticket_note", NOTE),)))
    response, frames = await chat.stream(chat_id, "Post a note to ticket 48213 please")
    assert response.status_code == 200
    kinds = types(frames)
    # SS-041: an interrupted turn ends with the interrupt, usage, finish-step, finish, [DONE]; no idle frame.
    assert kinds[-4:] == ["data-token-usage", "finish-step", "finish", "[DONE]"]
    assert "data-interrupt-request" in kinds
    assert {"status": "idle"} not in [f["part"].get("data") for f in frames if isinstance(f["part"], dict)]
    interrupt: dict[str, Any] = data_of(frames, "interrupt-request")
    return interrupt


async def test_ss041_ss042_a_tool_call_pauses_for_approval_and_runs_once_approved(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    interrupt = await _paused(chat, chat_id)
    (action,) = interrupt["action_requests"]
    assert (action["name"], action["args"]) == ("post_ticket_note", NOTE)
    assert interrupt["review_configs"][0]["allowed_decisions"] == ["approve", "edit", "reject", "approve_always"]
    assert (await chat.detail(chat_id))["last_turn"]["status"] == "awaiting_approval"
    # The request is in the account's approvals inbox.
    inbox = await get(chat, "/approvals")
    assert [item["id"] for item in inbox["items"]] == [action["approval_id"]]

    chat.model.add("Posted. Anything else?")
    resumed = await chat.http.post(
        f"{API}/sessions/{chat_id}/resume",
        json={"decisions": [{"request_id": action["approval_id"], "decision": "approve"}]},
        headers={**chat.a.headers(Role.ENGINEER), **SSE},
    )
    frames = read_frames(resumed.text)
    assert types(frames)[:5] == ["start", "start-step", "data-turn-info", "data-turn-status",
                                 "data-assistant-message-id"]
    # The continuation saw the call and its result.
    continuation = chat.model.seen[-1]
    assert continuation[-2].tool_calls[0].name == "post_ticket_note"
    assert continuation[-1].role == "tool"
    assert "No PSA connection" in continuation[-1].content
    approval = await get(chat, f"/approvals/{action['approval_id']}")
    assert approval["status"] == "executed"

    # The same resume again runs nothing.
    again = await chat.http.post(
        f"{API}/sessions/{chat_id}/resume",
        json={"decisions": [{"request_id": action["approval_id"], "decision": "approve"}]},
        headers=chat.a.headers(Role.ENGINEER),
    )
    problem(again, 409, "nothing_to_resume")
    assert len(chat.model.seen) == 2


async def test_ss042_a_call_without_a_decision_is_rejected_never_run(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    interrupt = await _paused(chat, chat_id)
    chat.model.add("Understood, I will not post it.")
    resumed = await chat.http.post(f"{API}/sessions/{chat_id}/resume", json={"decisions": []},
                                   headers=chat.a.headers(Role.ENGINEER))
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["content"] == "Understood, I will not post it."
    approval = await get(chat, f"/approvals/{interrupt['action_requests'][0]['approval_id']}")
    assert approval["status"] == "rejected"
    tool_reply = chat.model.seen[-1][-1]
    assert tool_reply.role == "tool"
    assert tool_reply.content.startswith("Not run")


async def test_ss042_an_edited_call_runs_with_the_edited_arguments(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    interrupt = await _paused(chat, chat_id)
    approval_id = interrupt["action_requests"][0]["approval_id"]
    chat.model.add("Posted the corrected note.")
    edited = {**NOTE, "ticket_id": "48214"}
    bad = await chat.http.post(
        f"{API}/sessions/{chat_id}/resume",
        json={"decisions": [{"request_id": approval_id, "decision": "edit", "edited_arguments": {"text": ""}}]},
        headers=chat.a.headers(Role.ENGINEER),
    )
    assert bad.status_code == 422, bad.text
    assert (await chat.detail(chat_id))["last_turn"]["status"] == "awaiting_approval"  # nothing consumed
    resumed = await chat.http.post(
        f"{API}/sessions/{chat_id}/resume",
        json={"decisions": [{"request_id": approval_id, "decision": "edit", "edited_arguments": edited}]},
        headers=chat.a.headers(Role.ENGINEER),
    )
    assert resumed.status_code == 200, resumed.text
    call = chat.model.seen[-1][-2].tool_calls[0]
    assert json.loads(call.arguments)["ticket_id"] == "48214"


async def test_invalid_tool_arguments_are_never_put_to_a_human(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add(Reply(text="Posting.", tool_calls=(tool_call("post_ticket_note", {"ticket_id": "1"}),)))
    turn = await chat.send(chat_id, "post it")
    assert turn["status"] == "complete"
    refused = next(p["data"] for p in turn["parts"] if p["type"] == "data-tool-calls-refused")
    assert refused[0]["name"] == "post_ticket_note"
    assert (await get(chat, "/approvals"))["items"] == []


async def test_ss042_approve_always_runs_later_calls_of_that_tool_without_asking(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    interrupt = await _paused(chat, chat_id)
    approval_id = interrupt["action_requests"][0]["approval_id"]
    assert "approve_always" in interrupt["review_configs"][0]["allowed_decisions"]
    chat.model.add("Posted.")
    resumed = await chat.http.post(
        f"{API}/sessions/{chat_id}/resume",
        json={"decisions": [{"request_id": approval_id, "decision": "approve_always"}]},
        headers=chat.a.headers(Role.ENGINEER),
    )
    assert resumed.json()["status"] == "complete"
    # The next call of the same tool runs in the turn, then the model goes on with its result.
    second = {**NOTE, "text": "Follow-up: the user confirmed."}
    chat.model.add(Reply(text="Posting the follow-up.", tool_calls=(tool_call("post_ticket_note", second),)),
                   "Both notes are on the ticket.")
    turn = await chat.send(chat_id, "add the follow-up too")
    assert turn["status"] == "complete"
    assert turn["content"] == "Posting the follow-up.\n\nBoth notes are on the ticket."
    assert chat.model.seen[-1][-1].role == "tool"
    decided = (await get(chat, f"/approvals?status=executed&session_id={chat_id}"))["items"]
    assert len(decided) == 2


async def test_marking_branches_keeps_the_chat_on_an_open_line(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    options = [{"label": "DNS"}, {"label": "DHCP"}]
    chat.model.add("Two ideas." + block("FORK", {"fork_reason": "both fit", "options": options}))
    fork = next(p["data"] for p in (await chat.send(chat_id, "No network on PC-7"))["parts"]
                if p["type"] == "data-fork")
    engineer = chat.a.headers(Role.ENGINEER)
    root_id = (await chat.detail(chat_id))["session"]["active_branch_id"]
    problem(await chat.http.post(f"{API}/chats/{chat_id}/branches/{root_id}/mark", json={"status": "dead_end"},
                                 headers=engineer), 409, "branch_closed")
    dns, dhcp = (b["branch_id"] for b in fork["branches"])
    await chat.http.post(f"{API}/chats/{chat_id}/branches/{dns}/switch", headers=engineer)
    marked = await chat.http.post(f"{API}/chats/{chat_id}/branches/{dns}/mark", json={"status": "dead_end"},
                                  headers=engineer)
    assert marked.status_code == 200, marked.text
    # Closing the active branch moves the chat to the next open sibling.
    assert (await chat.detail(chat_id))["session"]["active_branch_id"] == dhcp
    revived = await chat.http.post(f"{API}/chats/{chat_id}/branches/{dns}/revive",
                                   json={"evidence": "nslookup fails only on this VLAN"}, headers=engineer)
    assert revived.status_code == 200, revived.text
    chat.model.add("Then it is DNS after all.")
    await chat.send(chat_id, "what now?")
    assert "nslookup fails only on this VLAN" in chat.model.seen[-1][0].content  # UC-022 revival evidence


async def test_uc021_escalating_asks_for_the_fix_outcome_first_then_the_team_picks_up(chat: ChatApp) -> None:
    chat_id = await chat.new_chat()
    chat.model.add("Try this." + block("SUGGEST_FIX", {"title": "Restart the spooler", "description": "net stop",
                                                       "confidence": 55}))
    fix = next(p["data"] for p in (await chat.send(chat_id, "Printer queue stuck"))["parts"]
               if p["type"] == "data-suggested-fix")
    engineer = chat.a.headers(Role.ENGINEER)
    refused = await chat.http.post(f"{API}/chats/{chat_id}/escalate", json={"reason": "Out of ideas"},
                                   headers=engineer)
    body = problem(refused, 409, "fix_outcome_required")
    assert body["fix"]["id"] == fix["id"]
    outcome = await chat.http.patch(f"{API}/sessions/{chat_id}/suggested-fixes/{fix['id']}/outcome",
                                    json={"status": "applied_failure", "failure_reason": "Queue jams again"},
                                    headers=engineer)
    assert outcome.status_code == 200, outcome.text
    escalated = await chat.http.post(f"{API}/chats/{chat_id}/escalate", json={"reason": "Out of ideas"},
                                     headers=engineer)
    assert escalated.json()["status"] == "requesting_escalation"
    # A lead of the same team is notified, reads the chat and picks it up (FP-033, FP-041).
    lead = chat.a.headers(Role.LEAD)
    bell = (await chat.http.get(f"{API}/notifications", headers=lead)).json()
    assert any(n["link"] == f"/chat/{chat_id}" for n in bell)
    assert (await chat.http.get(f"{API}/chats/{chat_id}", headers=lead)).status_code == 200
    picked = await chat.http.post(f"{API}/chats/{chat_id}/pickup", headers=lead)
    assert picked.json()["status"] == "active"
    chat.model.add("Picking up: check the driver.")
    sent = await chat.http.post(f"{API}/sessions/{chat_id}/messages", json={"text": "I have it now"}, headers=lead)
    assert sent.json()["status"] == "complete"
