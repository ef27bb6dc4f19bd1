"""Prometheus scrape endpoint: `GET /metrics` in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import func
from sqlmodel import col, select

from pravah import metrics
from pravah.api.deps import MetricsGuard, SessionDep
from pravah.log import get_logger
from pravah.models import Job, JobStatus

router = APIRouter(tags=["metrics"])
log = get_logger(__name__)


# Public by default (scrapers rarely carry keys); PRAVAH_METRICS_PUBLIC=false
# asks for a viewer key.
@router.get("/metrics", include_in_schema=False, dependencies=[Depends(MetricsGuard)])
async def prometheus_metrics(session: SessionDep) -> Response:
    """Every control-plane metric; queue depth is read from the job store now."""
    try:
        stmt = (
            select(Job.status, func.count())
            .where(col(Job.status).in_([JobStatus.pending.value, JobStatus.running.value]))
            .group_by(Job.status)
        )
        counts = {status: int(n) for status, n in (await session.exec(stmt)).all()}
        metrics.JOBS_QUEUED.set(counts.get(JobStatus.pending.value, 0))
        metrics.JOBS_RUNNING.set(counts.get(JobStatus.running.value, 0))
    except Exception as exc:  # a scrape must still answer when the DB is down
        log.warning("queue depth unavailable for /metrics", error=str(exc))
    body, content_type = metrics.render()
    return Response(content=body, media_type=content_type)
