"""The starter library: coverage of the common MSP problems, sound flows and files that export unchanged."""

from __future__ import annotations

import yaml

from deskpilot.knowledge import starter, yaml_io
from deskpilot.knowledge.models import ProblemDomain
from deskpilot.knowledge.schemas import ActionNode, QuestionNode, ResolutionNode

EXPECTED_SLUGS = {
    "outlook-credential-prompts", "mfa-problems", "ad-account-lockout", "ad-replication", "dns-resolution",
    "dhcp-no-lease", "vpn-cannot-connect", "wifi-drops", "printer-spooler", "mapped-drives-missing",
    "onedrive-sync", "sharepoint-sync-permissions", "teams-audio-video-signin", "slow-logon-gpo", "disk-full",
    "backup-failing", "certificate-expiry", "rdp-cannot-connect", "intune-enrolment-failing", "mailbox-full",
    "exchange-mail-flow-ndr", "windows-update-failures", "bitlocker-recovery", "slow-pc-high-cpu",
    "azure-ad-connect-sync-errors",
}
EXPECTED_TEMPLATES = {
    "ad-unlock-account", "ad-reset-password", "dns-flush-register", "print-spooler-reset", "disk-space-report",
    "vpn-port-test", "gpupdate-report", "outlook-profile-reset", "onedrive-reset", "certificate-expiry-check",
    "windows-update-reset", "uptime-last-boot",
}


def test_library_covers_the_common_problems() -> None:
    flows = starter.flow_documents()
    assert len(flows) >= 25
    assert {f.slug for f in flows} >= EXPECTED_SLUGS
    assert {t.slug for t in starter.template_documents()} >= EXPECTED_TEMPLATES
    assert len({f.slug for f in flows}) == len(flows)
    # Every domain the classifier can name except "other" has at least one runbook.
    assert {f.problem_domain for f in flows} == set(ProblemDomain) - {ProblemDomain.OTHER}


def test_every_flow_asks_acts_resolves_and_names_real_templates() -> None:
    templates = {t.slug: t for t in starter.template_documents()}
    referencing = 0
    for flow in starter.flow_documents():
        kinds = {type(n) for n in flow.definition.nodes}
        assert kinds == {QuestionNode, ActionNode, ResolutionNode}, flow.slug
        assert flow.symptoms, flow.slug
        assert flow.tags, flow.slug
        assert flow.description, flow.slug
        for node in flow.definition.nodes:
            if isinstance(node, ActionNode) and node.script_template:
                referencing += 1
                template = templates[node.script_template]
                assert all(template.param(name) for name in node.default_params), (flow.slug, node.id)
    assert referencing >= 15


def test_starter_files_are_what_export_writes() -> None:
    for name, text in starter.flow_files():
        (doc,) = yaml_io.parse_flows(text)
        assert name == f"{doc.slug}.yaml"
        # The hand-written file and the export hold the same data, so nothing is lost on a round trip.
        assert yaml.safe_load(yaml_io.flow_to_yaml(doc)) == yaml_io.load_documents(text)[0], name
    for name, text in starter.template_files():
        (tdoc,) = yaml_io.parse_templates(text)
        assert name == f"{tdoc.slug}.yaml"
        assert yaml.safe_load(yaml_io.template_to_yaml(tdoc)) == yaml_io.load_documents(text)[0], name
