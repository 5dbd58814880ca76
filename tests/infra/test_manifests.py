"""Static checks of the deployment files under infra/: no network, no docker, no cloud.

They hold the manifests to the code they run: the entrypoints parse with the jobs' own argument
parsers, versions agree with the lock the image installs, the IAM policies grant what the consumer
calls and no more, and the CloudFormation template passes cfn-lint.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jobs import restore as restore_job
from jobs import s3_trigger

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
CFN = INFRA / "aws" / "trigger.yaml"
SQS_MAX_VISIBILITY_S = 43200
# the boto3 SQS calls of the trigger consumer (jobs/trigger_consumer.py)
CONSUMER_SQS_CALLS = ("receive_message", "delete_message", "change_message_visibility",
                      "get_queue_attributes")


# ---------------------------------------------------------------- loading

class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation's short intrinsic tags (!Ref, !Sub, !GetAtt, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load_cfn() -> dict:
    return yaml.load(CFN.read_text(), Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass


def k8s_docs() -> dict[str, dict]:
    """kind -> the one document of that kind in infra/k8s (ServiceAccounts: a list)."""
    out: dict = {"ServiceAccount": []}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_docs(path):
            if doc.get("kind") == "ServiceAccount":
                out["ServiceAccount"].append(doc)
            else:
                assert doc["kind"] not in out, f"two {doc['kind']} in infra/k8s"
                out[doc["kind"]] = doc
    return out


def lock_tool():
    spec = importlib.util.spec_from_file_location("refstar_infra_lock", INFRA / "lock.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lock_pins() -> dict[str, str]:
    return lock_tool().parse_lock((INFRA / "requirements.lock").read_text())


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", (INFRA / "Dockerfile").read_text(), re.M))


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def containers(node) -> list[dict]:
    """Every entry of a `containers` list anywhere below ``node``."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "containers" and isinstance(v, list):
                found += v
            found += containers(v)
    elif isinstance(node, list):
        for v in node:
            found += containers(v)
    return found


def group(cluster_spec: dict, name: str) -> dict:
    groups = {g["groupName"]: g for g in cluster_spec["workerGroupSpecs"]}
    assert name in groups, f"no worker group {name!r}: {sorted(groups)}"
    return groups[name]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def readme_image() -> str:
    m = re.search(r"docker build -f infra/Dockerfile -t (\S+) \.", (INFRA / "README.md").read_text())
    assert m, "infra/README.md must document `docker build -f infra/Dockerfile -t IMAGE .`"
    return m.group(1)


# ---------------------------------------------------------------- parsing and images

def test_every_yaml_under_infra_parses():
    paths = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
    names = {p.relative_to(INFRA).as_posix() for p in paths}
    assert {"k8s/raycluster.yaml", "k8s/rayjob.yaml", "k8s/trigger-deployment.yaml",
            "aws/cluster.yaml", "aws/trigger.yaml"} <= names
    for path in paths:
        docs = [load_cfn()] if path == CFN else load_docs(path)
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_cfn_loader_reads_intrinsics():
    doc = yaml.load("a: !GetAtt Q.Arn\nb: !Sub 'x-${B}'\nc: !Ref P\nd: !Not [!Equals [1, 2]]\n",
                    Loader=CfnLoader)  # noqa: S506
    assert doc == {"a": {"Fn::GetAtt": ["Q", "Arn"]}, "b": {"Fn::Sub": "x-${B}"}, "c": {"Ref": "P"},
                   "d": {"Fn::Not": [{"Fn::Equals": [1, 2]}]}}


def test_one_image_everywhere():
    image = readme_image()
    repo, _, tag = image.rpartition(":")
    assert re.fullmatch(r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+", repo), image
    assert tag == pyproject()["project"]["version"], "tag the image with the project version"
    assert f"-t {image} ." in (INFRA / "Dockerfile").read_text()
    used = {}
    for path in sorted(K8S.glob("*.yaml")):
        for d, doc in enumerate(load_docs(path)):
            for i, c in enumerate(containers(doc)):
                used[f"{path.name}[{d}].containers[{i}]:{c['name']}"] = c["image"]
    kust = load_docs(K8S / "kustomization.yaml")[0]
    (entry,) = kust["images"]
    assert entry["name"] == repo
    used["kustomization.yaml"] = f"{entry['newName']}:{entry['newTag']}"
    launcher = load_docs(INFRA / "aws" / "cluster.yaml")[0]
    used["aws/cluster.yaml"] = launcher["docker"]["image"]
    assert not {"head_image", "worker_image"} & set(launcher["docker"])
    for name, node_type in launcher["available_node_types"].items():
        assert "worker_image" not in node_type.get("docker", {}), name
    assert len(used) >= 8
    assert {k: v for k, v in used.items() if v != image} == {}


def test_kustomization_lists_existing_files():
    kust = load_docs(K8S / "kustomization.yaml")[0]
    assert kust["namespace"]
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res


# ---------------------------------------------------------------- versions and the lock

def test_ray_version_is_the_same_everywhere():
    # the image installs the lock, so cluster and job client run the same Ray
    docs = k8s_docs()
    pins = lock_pins()
    assert docs["RayCluster"]["spec"]["rayVersion"] == pins["ray"]
    assert docs["RayJob"]["spec"]["rayClusterSpec"]["rayVersion"] == pins["ray"]


def test_lock_leaves_out_the_test_extra():
    # whether the lock still equals a development venv is `python infra/lock.py --check`: it
    # depends on what that venv resolved, so it is not a test (CI installs the newest releases)
    pins = lock_pins()
    assert "pytest" not in pins and "moto" not in pins and "ruff" not in pins


def test_every_project_dependency_is_pinned():
    pins = lock_pins()
    deps = [Requirement(d) for d in pyproject()["project"]["dependencies"]]
    for req in deps + [Requirement("ray[default]")]:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} has no pin in infra/requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {req}"
    # ray[default] brings the dashboard/job server the cluster needs
    for extra_dep in ("aiohttp", "aiohttp-cors", "prometheus-client", "py-spy"):
        assert extra_dep in pins, extra_dep


def test_dockerfile_versions_follow_the_lock():
    args, pins = dockerfile_args(), lock_pins()
    lock_text = (INFRA / "requirements.lock").read_text()
    assert args["PYTHON_VERSION"] == lock_tool().lock_python(lock_text)
    assert args["TORCH_VERSION"] == pins["torch"]
    # the CUDA build of torch matches the CUDA of the base image: cu130 <-> nvidia/cuda:13.0.x
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"])
    assert m, args["CUDA_IMAGE"]
    assert args["TORCH_CUDA"] == f"cu{m.group(1)}{m.group(2)}"
    gpu_extra = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["gpu"]]
    (ort,) = [r for r in gpu_extra if r.name == "onnxruntime-gpu"]
    assert ort.specifier.contains(args["ONNXRUNTIME_GPU_VERSION"])


# ---------------------------------------------------------------- the Dockerfile

def test_dockerfile_builds_a_lean_non_root_image_from_the_lock():
    text = (INFRA / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)
    final = stages[-1]
    assert final.startswith("${CUDA_IMAGE}")
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users and users[-1] not in ("root", "0", "0:0"), users
    assert re.search(r"useradd .*--uid (?!0\b)\d+ .*" + re.escape(users[-1]), final)
    assert re.search(r"^WORKDIR /\S+", final, re.M)
    assert re.search(r'^CMD \["refstar", "--help"\]', final, re.M)
    build = "".join(stages[:-1])
    assert "COPY infra/requirements.lock /tmp/requirements.lock" in build
    assert re.search(r"pip install --no-cache-dir -r /tmp/requirements.lock", build)
    assert re.search(r"--extra-index-url \"https://download\.pytorch\.org/whl/\$\{TORCH_CUDA\}\"", build)
    assert '"torch==${TORCH_VERSION}+${TORCH_CUDA}"' in build
    assert "--no-deps" in build and "pip check" in build
    assert all("--no-cache-dir" in line for line in re.findall(r"pip install[^\n]*", text))
    # the runtime stage takes the venv, not the build tools
    assert "COPY --from=build /opt/venv /opt/venv" in final
    # no weights: nothing is fetched over HTTP besides packages
    assert not re.search(r"(curl|wget)\s+\S*https?://|huggingface|\.onnx\b|\.pth\b|\.safetensors\b", text)
    # BuildKit reads <Dockerfile>.dockerignore: the context is the sources and the lock only
    ignore = [ln for ln in (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
              if ln and not ln.startswith("#")]
    assert ignore[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!refstar/", "!worker/", "!jobs/",
            "!infra/requirements.lock"} <= set(ignore)


# ---------------------------------------------------------------- KubeRay

def test_raycluster_topology():
    rc = k8s_docs()["RayCluster"]
    spec = rc["spec"]
    assert rc["apiVersion"] == "ray.io/v1"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (head_c,) = head["template"]["spec"]["containers"]
    assert {"name": "dashboard", "containerPort": 8265} in [
        {"name": p.get("name"), "containerPort": p["containerPort"]} for p in head_c["ports"]]
    gpu = group(spec, "gpu")
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    (gpu_c,) = gpu["template"]["spec"]["containers"]
    assert str(gpu_c["resources"]["limits"]["nvidia.com/gpu"]) == gpu["rayStartParams"]["num-gpus"] == "1"
    # Kubernetes refuses an extended-resource request that differs from its limit
    assert gpu_c["resources"].get("requests", {}).get("nvidia.com/gpu", 1) == 1
    cpu = group(spec, "cpu")
    assert cpu["minReplicas"] == 0
    (cpu_c,) = cpu["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu_c["resources"].get("limits", {})
    assert "num-gpus" not in cpu["rayStartParams"]


def _secret_ref(env: dict[str, dict]) -> tuple[str, str]:
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_token_auth_is_wired_from_one_secret():
    docs = k8s_docs()
    rc = docs["RayCluster"]["spec"]
    refs = {_secret_ref(env_of(c)) for c in containers(rc)}
    refs.add(_secret_ref({e["name"]: e for e in rc["autoscalerOptions"]["env"]}))
    (trigger_c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    refs.add(_secret_ref(env_of(trigger_c)))
    assert refs == {("refstar-ray-token", "auth_token")}
    assert docs["RayJob"]["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"


def test_service_accounts_carry_irsa_roles():
    docs = k8s_docs()
    accounts = {sa["metadata"]["name"]: sa for sa in docs["ServiceAccount"]}
    used = {docs["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"]}
    for doc in (docs["RayCluster"]["spec"], docs["RayJob"]["spec"]["rayClusterSpec"]):
        groups = [doc["headGroupSpec"]] + doc["workerGroupSpecs"]
        used |= {g["template"]["spec"]["serviceAccountName"] for g in groups}
    assert used == set(accounts) == {"refstar-ray", "refstar-trigger"}
    for sa in accounts.values():
        arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", arn), arn


def _restore_argv(entrypoint: str) -> list[str]:
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "jobs.restore"], argv[:3]
    return argv[3:]


def test_rayjob_entrypoint_is_a_valid_restore_job():
    rj = k8s_docs()["RayJob"]
    spec = rj["spec"]
    assert rj["apiVersion"] == "ray.io/v1"
    assert spec["shutdownAfterJobFinishes"] is True
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec)
    args = restore_job.parse_args(_restore_argv(spec["entrypoint"]))
    assert args.input.startswith("s3://") and args.output.startswith("s3://")
    assert args.work and args.work.startswith(args.output), "multi-node: segment files on shared S3"
    gpu = group(spec["rayClusterSpec"], "gpu")
    (gpu_c,) = gpu["template"]["spec"]["containers"]
    assert args.restore_gpus == float(gpu["rayStartParams"]["num-gpus"]) == float(
        gpu_c["resources"]["limits"]["nvidia.com/gpu"]) == 1.0
    assert gpu_c["resources"].get("requests", {}).get("nvidia.com/gpu", 1) == 1
    assert gpu["maxReplicas"] >= args.restore_actors
    assert spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def _trigger_args():
    dep = k8s_docs()["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    argv = list(c.get("command", [])) + list(c.get("args", []))
    if argv[:2] == ["refstar", "trigger"]:
        argv = argv[2:]
    elif argv[:3] == ["python", "-m", "jobs.s3_trigger"]:
        argv = argv[3:]
    else:
        raise AssertionError(f"not the trigger consumer: {argv[:3]}")
    return dep, s3_trigger.parse_args(argv)


def test_trigger_deployment_runs_the_consumer_against_the_cluster():
    dep, args = _trigger_args()
    rc = k8s_docs()["RayCluster"]
    assert dep["spec"]["replicas"] == 1
    assert args.address == f"http://{rc['metadata']['name']}-head-svc:8265"
    assert rc["spec"]["headGroupSpec"]["rayStartParams"].get("dashboard-port", "8265") == "8265"
    assert args.queue.startswith("https://sqs.") and args.input.startswith("s3://")
    assert not args.output.startswith(args.input), "outputs would trigger jobs"
    assert 2 <= args.visibility <= SQS_MAX_VISIBILITY_S
    assert args.max_idle is None and not args.dry_run  # a service runs forever and for real


def test_trigger_job_args_make_valid_gpu_jobs():
    _, args = _trigger_args()
    job = restore_job.parse_args(["--item", f"{args.input}clip.mp4", "--output", args.output]
                                 + args.job_argv)
    gpu = group(k8s_docs()["RayCluster"]["spec"], "gpu")
    assert job.restore_gpus == float(gpu["rayStartParams"]["num-gpus"])
    assert job.work and job.work.startswith(args.output)


def test_trigger_has_time_to_drain_on_sigterm():
    dep, args = _trigger_args()
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    wait = args.wait if args.wait is not None else s3_trigger.DEFAULT_WAIT_S
    assert grace > wait + 10, (grace, wait)
    assert dep["spec"]["strategy"]["type"] == "Recreate"


# ---------------------------------------------------------------- CloudFormation

def _iam_action(call: str) -> str:
    return "sqs:" + "".join(w.capitalize() for w in call.split("_"))


def _statements(cfn: dict, name: str) -> list[dict]:
    res = cfn["Resources"][name]
    assert res["Type"] == "AWS::IAM::ManagedPolicy"
    return res["Properties"]["PolicyDocument"]["Statement"]


def _as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def _grants(statements: list[dict]) -> set[tuple[str, str]]:
    """(action, resource pattern) pairs; resources as their !Sub text or the resource they name."""
    out = set()
    for st in statements:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        for res in _as_list(st["Resource"]):
            key = res.get("Fn::Sub") if isinstance(res, dict) and "Fn::Sub" in res else str(res)
            out |= {(a, key) for a in _as_list(st["Action"])}
    return out


BUCKET = "arn:${AWS::Partition}:s3:::${BucketName}"
INPUT = BUCKET + "/${InputPrefix}*"
OUTPUT = BUCKET + "/${OutputPrefix}*"
QUEUE = str({"Fn::GetAtt": ["EventQueue", "Arn"]})


def test_iam_action_names():
    assert _iam_action("change_message_visibility") == "sqs:ChangeMessageVisibility"
    assert _iam_action("get_queue_attributes") == "sqs:GetQueueAttributes"


def test_trigger_policy_grants_exactly_what_the_consumer_calls():
    grants = _grants(_statements(load_cfn(), "TriggerPolicy"))
    sqs = {a for a, _ in grants if a.startswith("sqs:")}
    assert sqs == {_iam_action(c) for c in CONSUMER_SQS_CALLS}
    assert {(a, r) for a, r in grants if a.startswith("sqs:")} == {(a, QUEUE) for a in sqs}
    assert {(a, r) for a, r in grants if not a.startswith("sqs:")} == {
        ("s3:GetObject", INPUT), ("s3:ListBucket", BUCKET)}


def test_every_sqs_call_in_the_code_is_granted():
    calls = set()
    for path in list((ROOT / "jobs").glob("*.py")) + list((ROOT / "worker").rglob("*.py")):
        calls |= set(re.findall(r"\bsqs\.([a-z_]+)\(", path.read_text()))
    if not calls:
        pytest.skip("no SQS consumer code in this checkout yet")
    granted = {a for a, _ in _grants(_statements(load_cfn(), "TriggerPolicy"))}
    assert {_iam_action(c) for c in calls} <= granted, calls


def test_worker_policy_is_least_privilege():
    grants = _grants(_statements(load_cfn(), "WorkerPolicy"))
    assert grants == {
        ("s3:GetObject", INPUT),
        ("s3:GetObject", OUTPUT), ("s3:PutObject", OUTPUT), ("s3:DeleteObject", OUTPUT),
        ("s3:ListBucket", BUCKET),
    }
    assert not any("*" in a or r == "*" for a, r in grants)


def test_bucket_notifies_the_queue_for_the_input_prefix_only():
    cfn = load_cfn()
    params, res = cfn["Parameters"], cfn["Resources"]
    assert {"BucketName", "InputPrefix", "OutputPrefix", "MaxReceiveCount", "VisibilityTimeout"} <= set(params)
    assert params["VisibilityTimeout"]["MaxValue"] <= SQS_MAX_VISIBILITY_S
    bucket = res["MediaBucket"]
    props = bucket["Properties"]
    assert props["BucketName"] == {"Ref": "BucketName"}
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(props["PublicAccessBlockConfiguration"][k] is True for k in (
        "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    (qc,) = props["NotificationConfiguration"]["QueueConfigurations"]
    assert qc["Event"] == "s3:ObjectCreated:*"
    assert qc["Queue"] == {"Fn::GetAtt": ["EventQueue", "Arn"]}
    assert qc["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "InputPrefix"}}]
    # S3 tests delivery when the notification is put: the queue policy must exist first
    assert "EventQueuePolicy" in _as_list(bucket["DependsOn"])


def test_queue_policy_lets_only_this_bucket_send():
    res = load_cfn()["Resources"]
    (st,) = res["EventQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert st["Principal"] == {"Service": "s3.amazonaws.com"} and st["Action"] == "sqs:SendMessage"
    # built from the parameter, not !GetAtt MediaBucket.Arn (that would be a dependency cycle)
    assert st["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::Sub": BUCKET}
    assert st["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    redrive = res["EventQueue"]["Properties"]["RedrivePolicy"]
    assert redrive == {"deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                       "maxReceiveCount": {"Ref": "MaxReceiveCount"}}
    assert res["EventQueue"]["Properties"]["VisibilityTimeout"] == {"Ref": "VisibilityTimeout"}


def test_outputs_name_what_the_deployment_needs():
    outputs = load_cfn()["Outputs"]
    assert {"QueueUrl", "DeadLetterQueueUrl", "BucketName", "WorkerPolicyArn", "TriggerPolicyArn"} <= set(outputs)
    assert outputs["QueueUrl"]["Value"] == {"Ref": "EventQueue"}
    assert outputs["WorkerPolicyArn"]["Value"] == {"Ref": "WorkerPolicy"}


def test_cfn_lint_passes():
    from cfnlint import api  # the test extra installs it: missing is a failure, not a skip
    matches = api.lint_file(CFN, api.ManualArgs(regions=["us-east-1"], include_checks=["I"]))
    assert [str(m) for m in matches] == []


def test_cfn_lint_catches_a_broken_template():  # the lint above can fail
    from cfnlint import api  # the test extra installs it: missing is a failure, not a skip
    broken = CFN.read_text().replace("VisibilityTimeout: !Ref VisibilityTimeout",
                                     "VisibilityTimeout: !Ref NoSuchParameter")
    assert any(m.rule.id.startswith("E") for m in api.lint_all(broken))


# ---------------------------------------------------------------- Ray cluster launcher

def test_cluster_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load_docs(INFRA / "aws" / "cluster.yaml")[0]
    validate_config(prepare_config(cfg))  # Ray's own schema and defaults, offline
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert "GPU" not in head["resources"]
    assert any("--num-cpus=0" in c for c in cfg["head_start_ray_commands"])
    gpu = [t for t in types.values() if t["resources"].get("GPU")]
    cpu = [t for n, t in types.items() if n != cfg["head_node_type"] and not t["resources"].get("GPU")]
    assert gpu and cpu
    for t in gpu:
        assert t["resources"]["GPU"] == 1 and t["min_workers"] == 0
        assert "--gpus all" in t["docker"]["worker_run_options"]
    assert "--gpus all" not in cfg["docker"].get("run_options", [])  # CPU hosts have no GPU runtime
    for t in types.values():
        assert t["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")
    # the image brings everything: Ray's default setup commands (pip installs) must be overridden
    assert cfg["setup_commands"] == [] and cfg["head_setup_commands"] == []
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
