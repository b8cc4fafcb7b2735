"""The same chat as chat.py, split into one function per route, as a SAM template wires them:
$connect -> on_connect, $disconnect -> on_disconnect, sendmessage -> on_send_message,
$default -> on_default. Its DynamoDB resource is made at import time and its management API
client from a session of its own, as some handlers do.
"""

import json
import os

import boto3
from botocore.exceptions import ClientError

dynamodb = boto3.resource("dynamodb")


def _table():
    return dynamodb.Table(os.environ["TABLE_NAME"])


def _management_api(event):
    context = event["requestContext"]
    session = boto3.session.Session()
    return session.client(
        "apigatewaymanagementapi",
        endpoint_url="https://" + context["domainName"] + "/" + context["stage"],
    )


def on_connect(event, context):
    token = (event.get("queryStringParameters") or {}).get("token")
    if token != os.environ.get("CHAT_TOKEN", "open-sesame"):
        return {"statusCode": 401}
    name = event["queryStringParameters"].get("name", "anon")
    _table().put_item(Item={"connectionId": event["requestContext"]["connectionId"], "name": name})
    return {"statusCode": 200}


def on_disconnect(event, context):
    _table().delete_item(Key={"connectionId": event["requestContext"]["connectionId"]})
    return {"statusCode": 200}


def on_send_message(event, context):
    table = _table()
    sender = table.get_item(Key={"connectionId": event["requestContext"]["connectionId"]})
    message = json.loads(event["body"])["message"]
    data = json.dumps({"from": sender.get("Item", {}).get("name", "anon"), "message": message})
    api = _management_api(event)
    for item in table.scan()["Items"]:
        try:
            api.post_to_connection(ConnectionId=item["connectionId"], Data=data)
        except ClientError as error:
            if error.response["Error"]["Code"] != "GoneException":
                raise
            table.delete_item(Key={"connectionId": item["connectionId"]})
    return {"statusCode": 200}


def on_default(event, context):
    _management_api(event).post_to_connection(
        ConnectionId=event["requestContext"]["connectionId"],
        Data=b'{"error": "unknown action"}',
    )
    return {"statusCode": 200}
