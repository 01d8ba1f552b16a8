"""The Restaurant operator: a kopf operator that turns ``restaurants.baedal.io`` resources into
catalog events (the seeds' CDC step, done the Kubernetes way).

Not called ``operator``: a package of that name would shadow the standard library module.
Run it with ``baedal operator`` or ``kopf run -m services.restaurant_operator.handlers``.
"""
