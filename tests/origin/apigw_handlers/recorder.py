"""A handler that remembers every event it is given, for tests of what reaches a handler."""

events = []


def handler(event, context):
    events.append(event)
    return {"statusCode": 200}
