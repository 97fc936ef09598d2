from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import Manager, RuntimeDep
from dialer import campaigns
from dialer.schemas import CampaignIn, CampaignOut

router = APIRouter(tags=["campaigns"])


@router.post(
    "/campaigns",
    name="create_campaign",
    status_code=201,
    response_model=CampaignOut,
    summary="Create a campaign (purpose and channel checked against the catalogue)",
)
def create_campaign(body: CampaignIn, rt: RuntimeDep, who: Manager) -> CampaignOut:
    return campaigns.create_campaign(rt, who, body)


@router.get(
    "/campaigns/{campaign_id}",
    name="get_campaign",
    response_model=CampaignOut,
    summary="A campaign with its call counts by status",
    responses={404: {"description": "No such campaign"}},
)
def get_campaign(
    campaign_id: Annotated[str, Path(max_length=36)], rt: RuntimeDep, who: Manager
) -> CampaignOut:
    return campaigns.get_campaign(rt, campaign_id)
