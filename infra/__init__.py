"""The AWS CDK app's building blocks: one construct per concern, composed by `GatewayStack`.

`config` reads an environment from cdk.json context; `network`, `messaging`, `service`,
`origin` and `observability` each own one part of a region's deployment and its grants;
`stack` composes them; `findings` and `retention` are small shared helpers. `app.py` at the
top level decides which stacks exist. docs/architecture.md describes the result.
"""
