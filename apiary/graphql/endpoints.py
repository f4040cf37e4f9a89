"""/graphql on the app: queries and mutations over HTTP POST, the subscription over a
WebSocket (`graphql-transport-ws`), and GraphiQL on GET in development only.

Authentication is REST's: `Authorization: Bearer <access token or API key>` on HTTP; on the
WebSocket, the `connection_init` payload's `authorization` ("Bearer ...") or `token`. An
HTTP request runs in one unit of work, committed before the response is sent (as REST's
`DbSession`); jobs a mutation starts are enqueued after that commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from apiary.auth.dependencies import authenticate, bearer_credentials
from apiary.auth.forwarded import client_ip
from apiary.config import Settings
from apiary.db import session_scope
from apiary.errors import ApiaryError, Unauthorized
from apiary.graphql.context import GraphQLContext
from apiary.graphql.schema import schema
from apiary.runtime import Runtime

PATH = "/graphql"
# GraphiQL's page loads its scripts and styles from unpkg (pinned, with integrity hashes)
# and talks to this origin only.
GRAPHIQL_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' https://unpkg.com; "
    "style-src 'unsafe-inline' https://unpkg.com; img-src 'self' data:; "
    "font-src https://unpkg.com; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def _runtime(connection: HTTPConnection) -> Runtime:
    # REST's RuntimeDep reads a Request; this also serves the WebSocket.
    runtime: Runtime = connection.app.state.runtime
    return runtime


ConnectionRuntime = Annotated[Runtime, Depends(_runtime)]


async def _session(
    connection: HTTPConnection, runtime: ConnectionRuntime
) -> AsyncIterator[AsyncSession | None]:
    if connection.scope["type"] == "websocket":
        yield None  # a subscription opens short units of work as it reads
        return
    async with session_scope(runtime.session_factory) as session:
        yield session


async def _context(
    connection: HTTPConnection,
    runtime: ConnectionRuntime,
    # scope="function": committed before the response is sent, as REST's DbSession.
    session: Annotated[AsyncSession | None, Depends(_session, scope="function")],
) -> GraphQLContext:
    ip = client_ip(connection)
    auth = None
    header = connection.headers.get("authorization")
    if connection.scope["type"] == "http" and header is not None:
        # A bad credential is refused as REST refuses it (401), before any field runs.
        auth = await authenticate(bearer_credentials(header), ip, runtime)
    return GraphQLContext(runtime, session=session, auth=auth, ip=ip)


class ApiaryGraphQLRouter(GraphQLRouter[GraphQLContext, None]):
    async def on_ws_connect(self, context: GraphQLContext) -> dict[str, Any] | None:
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        authorization = params.get("authorization") or params.get("Authorization")
        token = params.get("token")
        try:
            if isinstance(authorization, str):
                credentials = bearer_credentials(authorization)
            elif isinstance(token, str) and token:
                credentials = token
            else:
                raise Unauthorized(
                    'send {"authorization": "Bearer <access token or API key>"} '
                    "as the connection_init payload"
                )
            context.auth = await authenticate(credentials, context.ip, context.runtime)
        except ApiaryError as error:
            raise ConnectionRejectionError({"error": error.name, "detail": error.detail}) from None
        return None

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        response = await super().render_graphql_ide(request)
        response.headers["content-security-policy"] = GRAPHIQL_CSP
        return response


def graphql_router(settings: Settings) -> GraphQLRouter[GraphQLContext, None]:
    return ApiaryGraphQLRouter(
        schema,
        path=PATH,
        context_getter=_context,
        # An explorer in development; elsewhere GET /graphql answers nothing.
        graphql_ide="graphiql" if settings.environment == "development" else None,
        allow_queries_via_get=False,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        include_in_schema=False,  # not an OpenAPI operation: its schema is docs/schema.graphql
    )
