"""SageMaker target: JumpStart endpoints and fine-tuning jobs, the evaluation entry point in
SageMaker Processing, the SageMaker Model Registry; every step an Amazon provider operator.

Rooms: `settings` (connection, Variables, operator arguments), `requests` (pure request
builders, checked against the AWS API model), `jumpstart` (specs), `staging` (before the
jobs), `operators` (the provider's, made to re-attach), `collect` (results and billing),
`resources` (teardown), `leases` and `release` (endpoint quotas, early release), `wiring`.
"""
