"""A local multi-model endpoint that routes like SageMaker's MME, in front of the real model server.

It speaks SageMaker Runtime's REST shape (``POST /endpoints/{name}/invocations`` with the
``X-Amzn-SageMaker-Target-Model`` header), so boto3's ``invoke_endpoint`` and ``genesig predict`` work against it
unchanged. On the first request for a TargetModel it fetches the artifact from the prefix (a folder or S3), extracts
it safely into a cache folder, loads it into the model server under an opaque name (as SageMaker does) and invokes;
on a 507 it unloads the least recently used model and retries. Model-server errors reach the caller as SageMaker's
``ModelError`` (HTTP 424 with the original status and body).

Split by job, as the serving gateway is: ``source`` (the prefix), ``cache`` (extracted artifacts on disk, LRU by
size), ``loader`` (loaded models, LRU by use, over the async client of the MME container API), ``stats`` (the
metrics), ``endpoint`` (the routes), ``process`` (a local endpoint as a child process).
"""

from genesig.local_endpoint.endpoint import CACHE_HEADER, LocalEndpoint
from genesig.local_endpoint.errors import EndpointError, opaque_name
from genesig.local_endpoint.process import runtime_client, start_local_endpoint
from genesig.local_endpoint.source import ModelSource

__all__ = [
    "CACHE_HEADER",
    "EndpointError",
    "LocalEndpoint",
    "ModelSource",
    "opaque_name",
    "runtime_client",
    "start_local_endpoint",
]
