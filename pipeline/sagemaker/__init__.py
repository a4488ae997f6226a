"""The pipeline on SageMaker: AWS clients and names, both pipeline definitions, the training job's entry, the Model
Registry and the MME prefix on S3, executions, the endpoint, the cost plan, and ``run-here`` (an execution's jobs on
this machine, as SageMaker would run them). The step code they run is the package above."""
