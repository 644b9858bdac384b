"""Kubernetes: an Indexed Job renders the parts, a second Job merges them (docs/kubernetes.md).

Every pod gets ``JOB_COMPLETION_INDEX`` (0-based).  Kubernetes does not put the completions
count in the pod's environment, so the manifest sets ``CLEVR_REMV_PARTS`` to the same number as
``spec.completions``.  CPU limits reach the task as a cgroup quota, which the device policy
reads for every scheduler; the environment says nothing more.

The manifests are YAML whose values are written as JSON scalars and lists (valid YAML), so no
YAML library is needed.  Nothing here calls ``kubectl``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ...errors import UsageError
from .base import PARTS_ENV, ArrayTask, Scheduler, Submission, int_env


def _q(value) -> str:
    return json.dumps(value)


class Kubernetes(Scheduler):
    name = "kubernetes"
    title = "Kubernetes Indexed Job"
    index_var = "JOB_COMPLETION_INDEX"
    script_dir = "kubernetes"

    def array_task(self, env: Mapping[str, str], parts: int | None) -> ArrayTask:
        index = int_env(env, self.index_var)
        if parts is None:
            raise UsageError(f"--part auto: JOB_COMPLETION_INDEX is set but not {PARTS_ENV}; set it to the "
                             f"Job's completions count in the manifest (Kubernetes does not pass it)")
        return ArrayTask(index, parts, f"Kubernetes completion index {index}, {PARTS_ENV}={parts}")

    def scripts(self, sub: Submission) -> dict[str, str]:
        o = sub.options
        claim, mount, image = o["claim"], o["mount"], o["image"]
        limits = {"memory": sub.mem} if sub.mem else {}
        if sub.gpus_per_task:
            limits["nvidia.com/gpu"] = sub.gpus_per_task
        requests = {"cpu": str(sub.cpus_per_task)} if sub.cpus_per_task else {}
        if sub.mem:
            requests["memory"] = sub.mem
        render = "\n".join([
            f"# clevr-remv render: {sub.scenes} scenes in {sub.shards} shards, {sub.tasks} pods of {sub.per_task}.",
            f"# Pod index i renders part i+1 of {sub.tasks} ({PARTS_ENV} = spec.completions).",
            "apiVersion: batch/v1",
            "kind: Job",
            "metadata:",
            f"  name: {_q(sub.job_name + '-render')}",
            "spec:",
            "  completionMode: Indexed",
            f"  completions: {sub.tasks}",
            f"  parallelism: {sub.parallel or min(sub.tasks, 16)}",
            "  backoffLimitPerIndex: 3",
            f"  maxFailedIndexes: {max(1, sub.tasks // 10)}",
            "  template:",
            "    spec:",
            "      restartPolicy: Never",
            "      terminationGracePeriodSeconds: 60",
            "      securityContext: {fsGroup: 1000}",
            "      containers:",
            "        - name: render",
            f"          image: {_q(image)}",
            f"          args: {_q(sub.generate)}",
            f"          env: [{{name: {PARTS_ENV}, value: {_q(str(sub.tasks))}}}]",
            f"          resources: {{requests: {_q(requests)}, limits: {_q(limits)}}}",
            f"          volumeMounts: [{{name: data, mountPath: {_q(mount)}}}]",
            f"      volumes: [{{name: data, persistentVolumeClaim: {{claimName: {_q(claim)}}}}}]",
            ""])
        merge = "\n".join([
            "# clevr-remv merge: joins the parts' manifests into manifest.json; exits 1 naming missing shards.",
            "# Apply when the render Job has ended (Kubernetes has no dependencies between Jobs).",
            "apiVersion: batch/v1",
            "kind: Job",
            "metadata:",
            f"  name: {_q(sub.job_name + '-merge')}",
            "spec:",
            "  backoffLimit: 0",
            "  template:",
            "    spec:",
            "      restartPolicy: Never",
            "      securityContext: {fsGroup: 1000}",
            "      containers:",
            "        - name: merge",
            f"          image: {_q(image)}",
            f"          args: {_q(sub.merge)}",
            "          resources: {requests: {cpu: \"1\", memory: 2Gi}}",
            f"          volumeMounts: [{{name: data, mountPath: {_q(mount)}}}]",
            f"      volumes: [{{name: data, persistentVolumeClaim: {{claimName: {_q(claim)}}}}}]",
            ""])
        return {"render-job.yaml": render, "merge-job.yaml": merge}

    def submit_command(self, sub: Submission, folder: Path, tasks: list[int]) -> list[list[str]]:
        job = f"job/{sub.job_name}-render"
        return [["kubectl", "apply", "-f", str(folder / "render-job.yaml")],
                ["kubectl", "wait", "--for=condition=complete", "--timeout=168h", job],
                ["kubectl", "apply", "-f", str(folder / "merge-job.yaml")]]
