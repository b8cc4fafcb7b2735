"""An echo handler with a bug: it answers, then fails on a message that is not JSON."""

import json

import boto3


def handler(event, context):
    request = event["requestContext"]
    if request["routeKey"] in ("$connect", "$disconnect"):
        return None
    apigw = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"https://{request['domainName']}/{request['stage']}",
    )
    apigw.post_to_connection(ConnectionId=request["connectionId"], Data=event["body"])
    json.loads(event["body"])  # the bug: raises on anything but JSON
    return {"statusCode": 200}
