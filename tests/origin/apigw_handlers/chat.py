"""A chat for an API Gateway WebSocket API, one Lambda function for every route.

Written as API Gateway's documentation writes such handlers, with nothing of the gateway in it:
the gateway runs it unchanged. Clients connect with `?token=<CHAT_TOKEN>&name=<name>` and send
`{"action": "sendmessage", "message": "..."}`; everyone connected gets
`{"from": <name>, "message": "..."}`. Connections live in the DynamoDB table TABLE_NAME (key
`connectionId`).
"""

import json
import logging
import os

import boto3

logger = logging.getLogger(__name__)


def handler(event, context):
    route_key = event["requestContext"]["routeKey"]
    connection_id = event["requestContext"]["connectionId"]
    table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])

    if route_key == "$connect":
        params = event.get("queryStringParameters") or {}
        if params.get("token") != os.environ.get("CHAT_TOKEN", "open-sesame"):
            logger.info("refusing %s: bad token", connection_id)
            return {"statusCode": 401, "body": "Unauthorized"}
        table.put_item(Item={"connectionId": connection_id, "name": params.get("name", "anon")})
        return {"statusCode": 200}

    if route_key == "$disconnect":
        table.delete_item(Key={"connectionId": connection_id})
        return {"statusCode": 200}

    domain = event["requestContext"]["domainName"]
    stage = event["requestContext"]["stage"]
    apigw = boto3.client("apigatewaymanagementapi", endpoint_url=f"https://{domain}/{stage}")

    if route_key == "sendmessage":
        message = json.loads(event["body"])["message"]
        sender = table.get_item(Key={"connectionId": connection_id}).get("Item", {})
        data = json.dumps({"from": sender.get("name", "anon"), "message": message})
        for item in table.scan(ProjectionExpression="connectionId")["Items"]:
            try:
                apigw.post_to_connection(ConnectionId=item["connectionId"], Data=data.encode())
            except apigw.exceptions.GoneException:
                logger.info("connection %s is gone, removing it", item["connectionId"])
                table.delete_item(Key={"connectionId": item["connectionId"]})
        return {"statusCode": 200}

    apigw.post_to_connection(
        ConnectionId=connection_id,
        Data=json.dumps({"error": 'send {"action": "sendmessage", "message": ...}'}),
    )
    return {"statusCode": 200}
