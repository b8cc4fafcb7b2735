"""Who is here: a handler that asks API Gateway about connections with get_connection.

`{"action": "whoami"}` answers the caller with its own connection's details;
`{"action": "lookup", "connectionId": "..."}` answers whether that connection is still there.
"""

import json

import boto3


def handler(event, context):
    request = event["requestContext"]
    if request["routeKey"] not in ("whoami", "lookup"):
        return {"statusCode": 200}
    apigw = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"https://{request['domainName']}/{request['stage']}",
    )
    if request["routeKey"] == "whoami":
        info = apigw.get_connection(ConnectionId=request["connectionId"])
        answer = {
            "connectedAt": info["ConnectedAt"].isoformat(),
            "lastActiveAt": info["LastActiveAt"].isoformat(),
            "sourceIp": info["Identity"]["SourceIp"],
            "userAgent": info["Identity"]["UserAgent"],
        }
    else:
        other = json.loads(event["body"])["connectionId"]
        try:
            apigw.get_connection(ConnectionId=other)
            answer = {"connectionId": other, "connected": True}
        except apigw.exceptions.GoneException:
            answer = {"connectionId": other, "connected": False}
    apigw.post_to_connection(ConnectionId=request["connectionId"], Data=json.dumps(answer))
    return {"statusCode": 200}
