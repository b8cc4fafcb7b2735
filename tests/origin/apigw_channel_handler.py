"""A ported API Gateway handler that adds channels through runtime.origin.apigw.gateway()
(kept out of apigw_handlers/, whose handlers must know nothing of the gateway)."""

import json

import boto3

from runtime.origin.apigw import gateway


def handler(event, context):
    request = event["requestContext"]
    if request["routeKey"] in ("$connect", "$disconnect"):
        return None
    body = json.loads(event["body"])
    me = request["connectionId"]
    gateway().subscribe(me, f"room:{body['room']}")
    apigw = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"https://{request['domainName']}/{request['stage']}",
    )
    apigw.post_to_connection(ConnectionId=me, Data=b"joined")
    gateway().publish_to_channel(f"room:{body['room']}", body["text"], regions=[request["region"]])
    if body.get("fail"):
        raise RuntimeError("the handler fails after its calls: they must not go out")
    return {"statusCode": 200}
