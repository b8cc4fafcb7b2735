"""The example origin: the chat Lambda function from runtime/, its table, and its queue.

It shows the whole loop working after `cdk deploy`, and is the template for wiring one's own
origin: consume the events queue with partial batch responses, publish commands to the topic.
In an environment of several regions its table is a DynamoDB global table, made by the first
region's stack with a replica in every other region (whose stacks deploy after it), so a room
holds members from every region; a reply to a connection of another region goes to that
region's commands topic, which the function may publish to.
The function's package is the origin SDK from the `runtime` directory as is, with the few modules
it imports (it needs only boto3, which the Lambda runtime provides), so there is no bundling step
and no Docker.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.messaging import EVENTS_VISIBILITY_TIMEOUT, GatewayMessaging
from infra.retention import log_retention
from infra.service import PROJECT_ROOT

HANDLER = "runtime.origin.examples.chat.handler"
RUNTIME = lambda_.Runtime.PYTHON_3_14
TIMEOUT = cdk.Duration.seconds(30)
# Only the origin SDK and the modules it imports go into the function's zip (not the node, not the
# local system); gitignore-style patterns. tests/infra/test_infra_container.py checks that the
# SDK's imports all resolve inside the package and that nothing else is there.
ASSET_EXCLUDES = [
    "/*",
    "!/runtime/",
    "/runtime/*",
    "!/runtime/__init__.py",
    "!/runtime/names.py",
    "!/runtime/origin/",
    "!/runtime/wire/",
    "/runtime/wire/*",
    "!/runtime/wire/__init__.py",
    "!/runtime/wire/channels.py",  # the channel commands, imported by commands.py
    "!/runtime/wire/command_fields.py",  # what commands.py and channels.py share
    "!/runtime/wire/commands.py",
    "!/runtime/wire/connection_id.py",
    "!/runtime/wire/graphql_contract.py",  # the GraphQL key limits the SDK shares with the node
    "!/runtime/wire/graphql_ws.py",  # imported by graphql_contract.py
    "__pycache__/",
    "*.pyc",
    ".*_cache/",
]
LAMBDA_ARCHITECTURES = {"ARM64": lambda_.Architecture.ARM_64, "X86_64": lambda_.Architecture.X86_64}
# FIFO queues hand Lambda at most 10 messages and allow no batching window. Messages are packed
# (up to 64 KiB of events each, about a hundred), so 10 of them are plenty for one invocation
# within its timeout on a standard queue too; the window lets light load fill them.
FIFO_BATCH_SIZE = 10
STANDARD_BATCH_SIZE = 10
STANDARD_BATCHING_WINDOW = cdk.Duration.seconds(1)

if TIMEOUT.to_seconds() * 6 > EVENTS_VISIBILITY_TIMEOUT.to_seconds():
    raise AssertionError("the events queue's visibility timeout must be 6x the function timeout")


class ExampleOrigin(Construct):
    """Chat rooms in DynamoDB, driven by gateway events, answering with commands."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        messaging: GatewayMessaging,
        environment_name: str,
        regions: tuple[str, ...],
        architecture: str,
        keepalive_seconds: int,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        names = messaging.names
        stack = cdk.Stack.of(self)
        self.table = self._table(names.chat_table, stack.region, regions)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention(log_retention_days))
        # Written out instead of AWSLambdaBasicExecutionRole: logs to this group only.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Example chat origin: events in, commands out, its table",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            description="Example gateway origin: chat rooms (runtime.origin.examples.chat)",
            runtime=RUNTIME,
            architecture=(
                lambda_.Architecture.ARM_64
                if architecture == "ARM64"
                else lambda_.Architecture.X86_64
            ),
            handler=HANDLER,
            code=lambda_.Code.from_asset(
                str(PROJECT_ROOT), exclude=ASSET_EXCLUDES, ignore_mode=cdk.IgnoreMode.GIT
            ),
            memory_size=256,
            timeout=TIMEOUT,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment={
                "CHAT_TABLE": self.table.table_name,
                "WSGW_ENVIRONMENT": environment_name,
                "WSGW_ACCOUNT_ID": cdk.Aws.ACCOUNT_ID,  # saves an STS call per cold start
                "KEEPALIVE_INTERVAL": str(keepalive_seconds),  # the nodes' interval: TTLs follow
            },
        )
        self.table.grant(
            self.function,
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:BatchGetItem",
            "dynamodb:BatchWriteItem",
        )
        # Replies go to the region of each connection, so to every region's commands topic.
        iam.Grant.add_to_principal(
            grantee=self.function,
            actions=["sns:Publish"],
            resource_arns=[
                stack.format_arn(
                    service="sns",
                    region=other,
                    resource=names.commands_topic,
                    arn_format=cdk.ArnFormat.NO_RESOURCE_NAME,
                )
                if other != stack.region
                else messaging.commands_topic.topic_arn
                for other in regions
            ],
        )
        fifo = names.fifo
        self.function.add_event_source(
            event_sources.SqsEventSource(
                messaging.events_queue,
                batch_size=FIFO_BATCH_SIZE if fifo else STANDARD_BATCH_SIZE,
                max_batching_window=None if fifo else STANDARD_BATCHING_WINDOW,
                report_batch_item_failures=True,  # one bad event does not redeliver the batch
            )
        )

    def _table(self, name: str, region: str, regions: tuple[str, ...]) -> dynamodb.ITableV2:
        """Alone, a regional table; with several regions, a global table owned by the first."""
        if region != regions[0]:
            # A replica of the first region's global table: that stack deploys first.
            return dynamodb.TableV2.from_table_name(self, "ChatRooms", name)
        # A new construct ID (and name): the regional table of earlier versions was ChatTable,
        # and CloudFormation cannot turn a Table into a GlobalTable in place.
        return dynamodb.TableV2(
            self,
            "ChatRooms",
            table_name=name,
            partition_key=dynamodb.Attribute(name="room", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="connectionId", type=dynamodb.AttributeType.STRING),
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute="expiresAt",
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            replicas=[dynamodb.ReplicaTableProps(region=other) for other in regions[1:]],
            # Entries live a few keep-alive intervals; nothing here outlives the stack.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
