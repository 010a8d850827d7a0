"""The Arc v1 REST endpoints (docs/protocol.md): parse → one operation → envelope.

Each view reads the path, query string and body, calls one operation of
``coordination.core.operations`` (the checks and the service every door shares) and
renders its ``Answer`` as Arc's envelope. Long-polls, the SSE stream and ``/v1/ask``
are async views in ``coordination.api.streams``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse
from rest_framework.request import Request
from rest_framework.views import APIView

from coordination.api.envelope import answer, idempotency_key, ok
from coordination.api.params import query_bool, query_limit, query_optional_int, query_since_id, query_str
from coordination.core import access, hub, selectors, services
from coordination.core import operations as ops
from coordination.core.parsing import json_object


class ArcView(APIView):
    """DRF view with Arc's conventions: any content type, JSON object bodies, Arc envelopes."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    # No DRF metadata on OPTIONS: Arc serves no OPTIONS, so it is a 405 envelope like any other wrong method.
    metadata_class = None

    def body(self, request: Request) -> dict[str, Any]:
        return json_object(request.body)

    def key(self, request: Request) -> str | None:
        """The request's ``Idempotency-Key``: a retry with it gets the first answer again."""
        return idempotency_key(request)


class SessionsView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        return answer(ops.session_open(access.of(request), self.body(request), key=self.key(request)))


class SessionView(ArcView):
    def delete(self, request: Request, session_id: str) -> HttpResponse:
        return answer(ops.session_close(access.of(request), session_id))


class ChannelsView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return answer(ops.rooms_list(access.of(request)))

    def post(self, request: Request) -> HttpResponse:
        return answer(ops.room_create(access.of(request), self.body(request)))


class ChannelCloseView(ArcView):
    """``POST /v1/channels/<name>/close`` (admin): posts to the room get 409; ``changed`` is false if it was closed."""

    def post(self, request: Request, name: str) -> HttpResponse:
        self.body(request)
        return answer(ops.room_close(access.of(request), name))


class ChannelReopenView(ArcView):
    """``POST /v1/channels/<name>/reopen`` (admin): the room takes posts again."""

    def post(self, request: Request, name: str) -> HttpResponse:
        self.body(request)
        return answer(ops.room_reopen(access.of(request), name))


class HubInfoView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return ok(hub.hub_info())


class MessagePostView(ArcView):
    """``POST /v1/messages`` (its ``GET``, the long-poll, is ``streams.messages``, which routes here)."""

    def post(self, request: Request) -> HttpResponse:
        return answer(ops.message_post(access.of(request), self.body(request), key=self.key(request)))


class ReplyClaimView(ArcView):
    def post(self, request: Request, message_id: int) -> HttpResponse:
        return answer(ops.reply_claim(access.of(request), message_id, self.body(request), key=self.key(request)))


class StatsView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return ok(selectors.hub_stats())


class MessageStatusView(ArcView):
    def get(self, request: Request, message_id: int) -> HttpResponse:
        return answer(ops.message_status(access.of(request), message_id))


class BootstrapView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return answer(ops.bootstrap(access.of(request), query_str(request.query_params, "agent_id")))


class ThreadsView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return answer(ops.threads_list(access.of(request)))


class ThreadView(ArcView):
    def get(self, request: Request, thread_id: str) -> HttpResponse:
        return answer(ops.thread_get(access.of(request), thread_id))


class InboxView(ArcView):
    def get(self, request: Request, agent_id: str) -> HttpResponse:
        q = request.query_params
        return answer(ops.inbox(access.of(request), agent_id, since_id=query_since_id(q), limit=query_limit(q)))


class InboxLeaseView(ArcView):
    """``POST /v1/inbox/{agent_id}/lease``: take the next direct messages as work."""

    def post(self, request: Request, agent_id: str) -> HttpResponse:
        return answer(
            ops.inbox_lease(access.of(request), {**self.body(request), "agent_id": agent_id}, key=self.key(request))
        )


class DeliveriesView(ArcView):
    """``GET /v1/deliveries?agent_id=&state=&limit=``: an agent's queue; admins may list everyone's."""

    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        return answer(
            ops.deliveries_list(
                access.of(request), agent_id=query_str(q, "agent_id"), state=query_str(q, "state"), limit=query_limit(q)
            )
        )


class DeliveryAckView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        acked = ops.delivery_ack(access.of(request), self.body(request), key=self.key(request)).result
        return ok({"agent_id": acked["agent_id"], "acked": acked["acked"]})


class DeliveryNackView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        return answer(ops.delivery_nack(access.of(request), self.body(request), key=self.key(request)))


class DeliveryRetryView(ArcView):
    """``POST /v1/deliveries/retry`` (admin): dead letters back into their queues."""

    def post(self, request: Request) -> HttpResponse:
        return answer(ops.deliveries_retry(access.of(request), self.body(request)))


class ClaimsView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        claims = selectors.claims_list(thread_id=query_str(q, "thread_id"), active_only=query_bool(q, "active_only"))
        return ok([c.as_wire() for c in claims])

    def post(self, request: Request) -> HttpResponse:
        return answer(ops.claim_acquire(access.of(request), self.body(request), key=self.key(request)))


class ClaimRefreshView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        return answer(ops.claim_refresh(access.of(request), self.body(request), key=self.key(request)))


class ClaimReleaseView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        return answer(ops.claim_release(access.of(request), self.body(request), key=self.key(request)))


class LocksView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        locks = selectors.locks_list(agent_id=query_str(q, "agent_id"), active_only=query_bool(q, "active_only"))
        return ok([lk.as_wire() for lk in locks])

    def post(self, request: Request) -> HttpResponse:
        return answer(ops.lock_acquire(access.of(request), self.body(request), key=self.key(request)))


class LockRefreshView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        return answer(ops.lock_refresh(access.of(request), self.body(request), key=self.key(request)))


class LockReleaseView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        return answer(ops.lock_release(access.of(request), self.body(request), key=self.key(request)))


class TasksView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        return answer(
            ops.tasks_list(
                access.of(request),
                parent_id=query_optional_int(q, "parent_id"),
                status=query_str(q, "status"),
                channel=query_str(q, "channel"),
                thread_id=query_str(q, "thread_id"),
                assignee=query_str(q, "assignee"),
            )
        )

    def post(self, request: Request) -> HttpResponse:
        """Delegate: a ``task_request`` to ``to_agent``, or to the agent the hub picks for ``to_capability``."""
        return answer(ops.task_delegate(access.of(request), self.body(request), key=self.key(request)))


class TaskResultView(ArcView):
    """``POST /v1/tasks/{id}/result``: answer a task (a ``task_result`` to its requester that finishes it)."""

    def post(self, request: Request, task_id: int) -> HttpResponse:
        return answer(
            ops.task_result(access.of(request), {**self.body(request), "task_id": task_id}, key=self.key(request))
        )


class TaskCompleteView(ArcView):
    def post(self, request: Request, task_id: int) -> HttpResponse:
        self.body(request)  # a malformed body is still an error, as in Arc
        return answer(ops.task_complete(access.of(request), task_id, key=self.key(request)))


class TaskStartView(ArcView):
    def post(self, request: Request, task_id: int) -> HttpResponse:
        self.body(request)
        return answer(ops.task_start(access.of(request), task_id, key=self.key(request)))


class TaskFailView(ArcView):
    def post(self, request: Request, task_id: int) -> HttpResponse:
        return answer(ops.task_fail(access.of(request), task_id, self.body(request), key=self.key(request)))


class NetworkView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return ok({"allow_remote": services.remote_allowed()})

    def post(self, request: Request) -> HttpResponse:
        return answer(ops.network_set(access.of(request), self.body(request)))


class ShutdownView(ArcView):
    def get(self, request: Request) -> HttpResponse:
        return ok(hub.shutdown.status())

    def post(self, request: Request) -> HttpResponse:
        return answer(ops.shutdown_start(access.of(request), self.body(request)))


class ShutdownCancelView(ArcView):
    def post(self, request: Request) -> HttpResponse:
        self.body(request)
        return answer(ops.shutdown_cancel(access.of(request)))


class SearchView(ArcView):
    """``GET /v1/search?q=&channel=&from_agent=&limit=``: messages whose bodies hold every word of ``q``.

    Answers a list of messages, best match first, like the other list endpoints. ``from_agent``
    filters by author (it is not an acting field: a key may search others' posts it can see).
    Matching and visibility: ``coordination.core.search``.
    """

    def get(self, request: Request) -> HttpResponse:
        q = request.query_params
        return answer(
            ops.search_messages(
                access.of(request),
                q=q.get("q") or "",
                channel=query_str(q, "channel"),
                from_agent=query_str(q, "from_agent"),
                limit=query_limit(q),
            )
        )


class HookView(ArcView):
    """``POST /v1/hooks/<client>?agent_id=NAME[&strict=1]``: a Claude Code or Codex HTTP hook (docs/agents.md).

    The body is the hook's input JSON as the client sends it; the answer is the hook's output
    JSON (not an Arc envelope), ``{}`` when the hub has nothing to add. Errors are Arc envelopes
    with a 4xx status, which the client reports and goes on from.
    """

    def post(self, request: Request, client: str) -> HttpResponse:
        q = request.query_params
        outcome = ops.hook_answer(
            access.of(request),
            query_str(q, "agent_id"),
            self.body(request),
            client=client,
            strict=query_bool(q, "strict"),
        )
        return JsonResponse(outcome.result, status=outcome.status, json_dumps_params={"ensure_ascii": False})
