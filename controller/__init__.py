"""kube-ecr-cleanup-controller: prunes Amazon ECR repositories without touching images a cluster uses."""

__version__ = "0.1.0"
