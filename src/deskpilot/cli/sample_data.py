"""Sample data for `deskpilot demo`: an MSP account, a lead and two engineers in one team, flows and scripts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from deskpilot.identity import service as identity
from deskpilot.identity.models import Account, Role
from deskpilot.knowledge import service as knowledge
from deskpilot.storage import Database

DEMO_ACCOUNT = "Northwind MSP"
DEMO_PASSWORD = "deskpilot-demo"
DEMO_USERS = (
    ("owner@northwind.example", "Olivia Owner", Role.OWNER),
    ("lead@northwind.example", "Liam Lead", Role.LEAD),
    ("alex@northwind.example", "Alex Engineer", Role.ENGINEER),
    ("sam@northwind.example", "Sam Engineer", Role.ENGINEER),
)
DEMO_CLIENTS = ("Contoso Dental", "Fabrikam Logistics", "Tailspin Architects")


@dataclass(frozen=True)
class DemoLogin:
    created: bool
    emails: tuple[str, ...]
    password: str
    api_token: str | None


async def load_sample_data(db: Database) -> DemoLogin:
    """Create the demo account once; later runs leave it as it is."""
    emails = tuple(e for e, _, _ in DEMO_USERS)
    async with db.system_session() as session:
        if await session.scalar(select(Account.id).where(Account.name == DEMO_ACCOUNT)) is not None:
            return DemoLogin(created=False, emails=emails, password=DEMO_PASSWORD, api_token=None)
        owner_email, owner_name, _ = DEMO_USERS[0]
        boot = await identity.bootstrap(
            session, account_name=DEMO_ACCOUNT, email=owner_email, name=owner_name, password=DEMO_PASSWORD
        )
        team = await identity.create_team(session, account_id=boot.account.id, name="Service Desk")
        owner = boot.owner
        owner.team_id = team.id
        for email, name, role in DEMO_USERS[1:]:
            await identity.create_user(
                session, account_id=boot.account.id, email=email, name=name, role=role,
                password=DEMO_PASSWORD, team_id=team.id,
            )
        for client_name in DEMO_CLIENTS:
            await identity.create_client(session, account_id=boot.account.id, name=client_name)
        await knowledge.load_starter_library(session, boot.account.id)
        await session.commit()
    return DemoLogin(created=True, emails=emails, password=DEMO_PASSWORD, api_token=boot.token.secret)
