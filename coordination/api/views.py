"""The Arc v1 REST endpoints: parse → one service or selector call → envelope.

Long-polls and the SSE stream are async views in ``coordination.api.streams``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from rest_framework.request import Request
from rest_framework.views import APIView

from coordination import access, hub, search, selectors, services
from coordination.api import serializers as s
from coordination.api.envelope import ok
from coordination.api.params import json_object, query_bool, query_limit, query_optional_int, query_since_id, query_str
from coordination.errors import Invalid


class ArcView(APIView):
    """DRF view with Arc's conventions: any content type, JSON object bodies, Arc envelopes."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    # No DRF metadata on OPTIONS: Arc serves no OPTIONS, so it is a 405 envelope like any other wrong method.
    metadata_class = None

    def body(self, request: Request) -> dict[str, Any]:
        return json_object(request.body)


class SessionsView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        who = access.of(request)
        data = s.SessionCreate.parse(who.bind(self.body(request), "agent_id"))
        session = services.session_create(
            agent_id=data["agent_id"],
            display_name=data.get("display_name"),
            capabilities=data.get("capabilities", []),
            metadata=data.get("metadata"),
            replace=data.get("replace", False),
        )
        return ok(session.as_wire(), 201)


class SessionView(ArcView):
    def delete(self, request: Request, session_id: str) -> HttpResponse:
        services.session_close(session_id=session_id, actor=access.of(request).agent_id)
        return ok({"session_id": session_id, "deleted": True})


class ChannelsView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        who = access.of(request)
        return ok([room.as_wire() for room in selectors.rooms_list() if who.can_see_room(room.name)])

    def post(self, request: Request) -> HttpResponse:
        data = s.ChannelCreate.parse(access.of(request).bind(self.body(request), "created_by"))
        room, created = services.room_create(
            name=data["name"], created_by=data.get("created_by"), metadata=data.get("metadata")
        )
        return ok(room.as_wire(), 201 if created else 200)


class ChannelCloseView(ArcView):
    """``POST /v1/channels/<name>/close`` (admin): posts to the room get 409; ``changed`` is false if it was closed."""

    def post(self, request: Request, name: str) -> HttpResponse:
        who = access.of(request)
        who.require_admin("closing a room")
        self.body(request)
        room, changed = services.room_close(name=name, actor=who.agent_id or access.OPERATOR)
        return ok(room.as_wire(), changed=changed)


class ChannelReopenView(ArcView):
    """``POST /v1/channels/<name>/reopen`` (admin): the room takes posts again."""

    def post(self, request: Request, name: str) -> HttpResponse:
        who = access.of(request)
        who.require_admin("reopening a room")
        self.body(request)
        room, changed = services.room_reopen(name=name, actor=who.agent_id or access.OPERATOR)
        return ok(room.as_wire(), changed=changed)


class HubInfoView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return ok(hub.hub_info())


class MessagePostView(ArcView):
    """``POST /v1/messages``; ``GET`` is the long-poll in ``streams``."""

    def post(self, request: Request) -> HttpResponse:
        who = access.of(request)
        data = s.MessagePost.parse(who.bind(self.body(request), "from_agent"))
        who.check_post(to_agent=data.get("to_agent") or data.get("to_capability"), channel=data.get("channel"))
        message = services.message_post(**data)
        return ok(message.as_wire(), 201, **selectors.post_receipt(message))


class ReplyClaimView(ArcView):
    def post(self, request: Request, message_id: int) -> HttpResponse:
        who = access.of(request)
        data = s.ReplyClaim.parse(who.bind(self.body(request), "agent_id"))
        who.require_party(selectors.message_get(message_id).as_wire())
        message, acquired = services.reply_claim(message_id=message_id, agent_id=data["agent_id"])
        return ok(message.as_wire(), 201 if acquired else 200, acquired=acquired)


class StatsView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return ok(selectors.hub_stats())


class MessageStatusView(ArcView):
    def get(self, request: Request, message_id: int) -> HttpResponse:
        message = selectors.message_get(message_id)
        access.of(request).require_party(message.as_wire())
        return ok(selectors.message_status(message))


class BootstrapView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        agent_id = access.of(request).act_as(query_str(request.query_params, "agent_id"), "agent_id")
        if not agent_id:
            raise Invalid("agent_id query parameter is required")
        services.sessions_prune_expired()
        return ok(selectors.bootstrap(agent_id=agent_id))


class ThreadsView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        who = access.of(request)
        return ok([t for t in selectors.threads_list() if t["channel"] is None or who.can_see_room(t["channel"])])


class ThreadView(ArcView):
    def get(self, request: Request, thread_id: str) -> HttpResponse:
        who = access.of(request)
        detail = selectors.thread_detail(thread_id=thread_id)
        who.require_room(detail["thread"]["channel"])
        detail["messages"] = [m for m in detail["messages"] if who.may_read(m)]
        return ok(detail)


class InboxView(ArcView):
    def get(self, request: Request, agent_id: str) -> HttpResponse:
        agent_id = access.of(request).act_as(agent_id, "agent_id")
        q = request.query_params
        messages = selectors.inbox(agent_id=agent_id, since_id=query_since_id(q), limit=query_limit(q))
        return ok([m.as_wire() for m in messages])


class InboxLeaseView(ArcView):
    """``POST /v1/inbox/{agent_id}/lease``: take the next direct messages as work (SPEC 2)."""

    def post(self, request: Request, agent_id: str) -> HttpResponse:
        agent_id = access.of(request).act_as(agent_id, "agent_id")
        data = s.InboxLease.parse(self.body(request))
        leased = services.inbox_lease(
            agent_id=agent_id, max_messages=data.get("max", 10), lease_sec=data.get("lease_sec", 60)
        )
        return ok([selectors.leased_wire(d) for d in leased])


class DeliveriesView(ArcView):
    """``GET /v1/deliveries?agent_id=&state=&limit=``: an agent's queue; admins may list everyone's."""

    def get(self, request: Request) -> HttpResponse:
        who = access.of(request)
        q = request.query_params
        agent_id = query_str(q, "agent_id")
        if not who.admin:
            agent_id = who.act_as(agent_id, "agent_id")
        rows = selectors.deliveries_list(agent_id=agent_id, state=query_str(q, "state"), limit=query_limit(q))
        return ok([selectors.delivery_wire(d) for d in rows])


class DeliveryAckView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        data = s.DeliveryAck.parse(access.of(request).bind(self.body(request), "agent_id"))
        acked = services.delivery_ack(agent_id=data["agent_id"], message_ids=data["message_ids"])
        return ok({"agent_id": data["agent_id"], "acked": acked})


class DeliveryNackView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        data = s.DeliveryNack.parse(access.of(request).bind(self.body(request), "agent_id"))
        delivery = services.delivery_nack(
            agent_id=data["agent_id"],
            message_id=data["message_id"],
            reason=data.get("reason", ""),
            delay_sec=data.get("delay_sec", 0),
        )
        return ok(delivery.as_wire())


class DeliveryRetryView(ArcView):
    """``POST /v1/deliveries/retry`` (admin): dead letters back into their queues."""

    def post(self, request: Request) -> HttpResponse:
        access.of(request).require_admin("retrying dead letters")
        data = s.DeliveryRetry.parse(self.body(request))
        retried = services.deliveries_retry(message_ids=data["message_ids"], agent_id=data.get("agent_id"))
        return ok({"retried": retried})


class ClaimsView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        claims = selectors.claims_list(thread_id=query_str(q, "thread_id"), active_only=query_bool(q, "active_only"))
        return ok([c.as_wire() for c in claims])

    def post(self, request: Request) -> HttpResponse:
        data = s.ClaimAcquire.parse(access.of(request).bind(self.body(request), "owner_agent_id"))
        claim, acquired = services.claim_acquire(**data)
        return ok(claim.as_wire(), 201 if acquired else 200, acquired=acquired)


class ClaimRefreshView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        data = s.ClaimRefresh.parse(access.of(request).bind(self.body(request), "owner_agent_id"))
        return ok(services.claim_refresh(**data).as_wire(), acquired=True)


class ClaimReleaseView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        data = s.ClaimRelease.parse(access.of(request).bind(self.body(request), "agent_id"))
        return ok(services.claim_release(**data).as_wire())


class LocksView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        locks = selectors.locks_list(agent_id=query_str(q, "agent_id"), active_only=query_bool(q, "active_only"))
        return ok([lk.as_wire() for lk in locks])

    def post(self, request: Request) -> HttpResponse:
        data = s.LockAcquire.parse(access.of(request).bind(self.body(request), "agent_id"))
        lock, acquired = services.lock_acquire(**data)
        return ok(lock.as_wire(), 201 if acquired else 200, acquired=acquired)


class LockRefreshView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        data = s.LockRefresh.parse(access.of(request).bind(self.body(request), "agent_id"))
        return ok(services.lock_refresh(**data).as_wire(), acquired=True)


class LockReleaseView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        data = s.LockRelease.parse(access.of(request).bind(self.body(request), "agent_id"))
        return ok(services.lock_release(**data).as_wire())


class TasksView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        status = query_str(q, "status")
        who = access.of(request)
        tasks = selectors.tasks_list(
            parent_id=query_optional_int(q, "parent_id"),
            status=status,
            channel=query_str(q, "channel"),
            thread_id=query_str(q, "thread_id"),
            assignee=query_str(q, "assignee"),
        )
        return ok([wire for wire in (t.as_wire() for t in tasks) if who.may_see_task(wire)])


class TaskCompleteView(ArcView):
    def post(self, request: Request, task_id: int) -> HttpResponse:
        self.body(request)  # a malformed body is still an error, as in Arc
        who = access.of(request)
        task, parent_completed = services.task_complete(task_id=task_id, actor=who.agent_id, admin=who.admin)
        if parent_completed:
            return ok(task.as_wire(), parent_completed=True)
        return ok(task.as_wire())


class TaskStartView(ArcView):
    def post(self, request: Request, task_id: int) -> HttpResponse:
        self.body(request)
        who = access.of(request)
        return ok(services.task_start(task_id=task_id, actor=who.agent_id, admin=who.admin).as_wire())


class TaskFailView(ArcView):
    def post(self, request: Request, task_id: int) -> HttpResponse:
        who = access.of(request)
        data = s.TaskFail.parse(self.body(request))
        task = services.task_fail(
            task_id=task_id, reason=data.get("reason") or "failed", actor=who.agent_id, admin=who.admin
        )
        return ok(task.as_wire())


class NetworkView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return ok({"allow_remote": services.remote_allowed()})

    def post(self, request: Request) -> HttpResponse:
        access.of(request).require_admin("the network toggle")
        data = s.NetworkToggle.parse(self.body(request))
        if "allow_remote" in data:
            services.network_set(allow_remote=data["allow_remote"])
        return ok({"allow_remote": services.remote_allowed()})


class ShutdownView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return ok(hub.shutdown.status())

    def post(self, request: Request) -> HttpResponse:
        access.of(request).require_admin("shutting the hub down")
        data = s.ShutdownStart.parse(self.body(request))
        status = hub.shutdown.start(data.get("delay_sec", 60))
        return ok({"status": "shutdown_initiated", **(status or {})})


class ShutdownCancelView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        access.of(request).require_admin("cancelling a shutdown")
        self.body(request)
        hub.shutdown.cancel()
        return ok({"status": "shutdown_cancelled"})


class SearchView(ArcView):
    """``GET /v1/search?q=&channel=&from_agent=&limit=``: messages whose bodies hold every word of ``q``.

    Answers a list of messages, best match first, like the other list endpoints. ``from_agent``
    filters by author (it is not an acting field: a key may search others' posts it can see).
    Matching and visibility: ``search.messages_search``.
    """

    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        results = search.messages_search(
            q=q.get("q") or "",
            reader=access.of(request),
            channel=query_str(q, "channel"),
            from_agent=query_str(q, "from_agent"),
            limit=query_limit(q),
        )
        return ok(results)
