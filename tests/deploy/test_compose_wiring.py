"""compose.yaml wiring: each service gets what its own settings loader requires, starts only after
healthy dependencies, the worker gets a GPU, and no image comes from the deleted MinIO repos."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from deploy_support import MULTI_GPU_FILE, ROOT, load_compose, raw_compose, service_environment

SETTINGS_MODULES = [ROOT / "worker" / "settings.py", ROOT / "api" / "settings.py"]
CVE_2025_62506_FIXED_IN = "RELEASE.2025-10-15T17-29-55Z"  # RELEASE.YYYY-MM-DDTHH-MM-SSZ sorts as text
DELETED_OR_UNPATCHED = re.compile(r"^(docker\.io/|index\.docker\.io/|quay\.io/)?minio/(minio|mc)(:|@|$)")


@pytest.fixture(scope="module")
def services() -> dict:
    return load_compose()["services"]


def env_of(services: dict, name: str, voices_dir: Path | None = None) -> dict[str, str]:
    env = service_environment(services[name])
    if voices_dir is not None and "ECHO_VOICES_DIR" in env:
        env["ECHO_VOICES_DIR"] = str(voices_dir)  # the container's mount point, here a real directory
    return env


def settings_names() -> set[str]:
    names: set[str] = set()
    for module in SETTINGS_MODULES:
        names |= set(re.findall(r'"((?:ECHO|AWS|HF)_[A-Z0-9_]+)"', module.read_text()))
    return names


def test_every_setting_the_code_reads_is_listed_in_env_example() -> None:
    # Given the names the settings modules read and the lines of .env.example
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    # When we compare them
    missing = settings_names() - listed
    # Then every setting is documented there (set, or commented with its default)
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_env_example_agrees_with_the_compose_defaults() -> None:
    # Given the values in .env.example and compose.yaml's own defaults (a clone without .env)
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    with_example = load_compose(env=example)["services"]
    defaults = load_compose()["services"]
    # When both are rendered
    # Then copying .env.example changes nothing: the docs' curl example works either way
    for name in ("api", "worker", "minio", "s3-init"):
        assert service_environment(with_example[name]) == service_environment(defaults[name]), name


def test_each_service_environment_satisfies_its_own_settings_loader(services: dict, tmp_path: Path) -> None:
    from api.settings import ApiSettings
    from jobs.settings import StorageSettings
    from worker.settings import WorkerSettings

    # Given the environment compose gives the api, worker and s3-init containers
    # When each is read by the settings loader that process uses
    api = ApiSettings.from_env(env_of(services, "api", tmp_path))
    worker = WorkerSettings.from_env(env_of(services, "worker"))
    init = StorageSettings.from_env(env_of(services, "s3-init"))
    # Then nothing is missing, all three use the same MinIO bucket, and Redis is the redis service
    for storage in (api.storage, worker.storage, init):
        assert storage.backend == "s3" and urlparse(storage.endpoint_url).hostname == "minio"
    assert api.storage == worker.storage == init
    assert urlparse(api.redis_url).hostname == urlparse(worker.redis_url).hostname == "redis"
    assert api.api_keys, "auth is on in the stack"
    assert worker.device == "cuda"
    # And the assembler is the same worker in the assemble role, on the CPU queue only, same Redis and bucket
    assembler = WorkerSettings.from_env(env_of(services, "assembler"), role="assemble")
    assert (assembler.role, assembler.queues, assembler.device) == ("assemble", ("tts-assembly", "tts-webhooks"), "cpu")
    assert assembler.storage == init and assembler.redis_url == worker.redis_url
    assert services["assembler"]["command"][-2:] == ["--role", "assemble"] and "deploy" not in services["assembler"]


def test_the_storage_credentials_are_minios_root_user(services: dict) -> None:
    # Given the MinIO server's root user and the clients' AWS keys
    minio = service_environment(services["minio"])
    api = service_environment(services["api"])
    # When we compare them
    # Then the clients log in as the user the server was started with
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
        api["AWS_ACCESS_KEY_ID"],
        api["AWS_SECRET_ACCESS_KEY"],
    )
    assert len(minio["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses shorter passwords


def test_presigned_urls_are_signed_for_the_port_minio_publishes_on_the_host(services: dict) -> None:
    # Given the public endpoint the API presigns with and MinIO's published ports
    public = urlparse(service_environment(services["api"])["ECHO_S3_PUBLIC_ENDPOINT_URL"])
    published = [str(p) for p in services["minio"]["ports"]]
    # When we match them
    # Then the URL's host is the host machine and its port is published to MinIO's S3 port
    assert public.hostname == "localhost"
    assert any(p.endswith(f":{public.port}:9000") for p in published), published


def test_every_dependency_is_waited_for_until_healthy_or_done(services: dict) -> None:
    # Given every depends_on entry in the stack
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            # When we read its condition
            condition = rule["condition"]
            # Then long-running dependencies must be healthy (and have a healthcheck); one-shots must succeed
            if dependency == "s3-init":
                assert condition == "service_completed_successfully", (name, dependency)
            else:
                assert condition == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], dependency
    assert set(services["api"]["depends_on"]) >= {"redis", "minio"}
    assert set(services["worker"]["depends_on"]) >= {"redis", "minio"}


def test_the_worker_reserves_one_nvidia_gpu_and_caches_weights_in_a_volume(services: dict) -> None:
    # Given the worker service
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    env = service_environment(worker)
    # When we read its GPU reservation, cache volume and token
    # Then it is one NVIDIA GPU, HF_HOME is a named volume and HF_TOKEN comes from the host
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert f"hf-cache:{env['HF_HOME']}" in worker["volumes"]
    assert "hf-cache" in load_compose()["volumes"]
    assert raw_compose()["services"]["worker"]["environment"]["HF_TOKEN"].startswith("${HF_TOKEN")
    assert worker["command"][:3] == ["python", "-m", "worker"] and "healthcheck" in worker


def test_the_api_serves_port_8000_and_is_health_checked_on_healthz(services: dict) -> None:
    # Given the api service
    api = services["api"]
    # When we read its command, ports and healthcheck
    # Then gunicorn binds 8000 through `python -m api`, 8000 is published and /healthz is probed with python
    assert api["command"] == ["python", "-m", "api", "--bind", "0.0.0.0:8000"]
    assert any(str(p).endswith(":8000:8000") for p in api["ports"])
    assert api["healthcheck"]["test"][:2] == ["CMD", "python"] and "/healthz" in api["healthcheck"]["test"][-1]


def test_redis_keeps_an_append_only_file_on_a_volume(services: dict) -> None:
    # Given the redis service
    redis = services["redis"]
    # When we read its command, volume and healthcheck
    # Then AOF is on, /data is a named volume and redis-cli ping checks it
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in redis["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_no_image_comes_from_the_deleted_docker_hub_minio_repositories(services: dict) -> None:
    # Given every image the stack names
    images = {name: s.get("image", "") for name, s in services.items()}
    # When we look for minio/minio and minio/mc (deleted from Docker Hub; quay's tags predate the CVE fix)
    offenders = {name: image for name, image in images.items() if DELETED_OR_UNPATCHED.match(image)}
    # Then there are none, and MinIO is built from our own Dockerfile with no curl-based healthcheck
    assert offenders == {}
    assert services["minio"]["build"]["context"] == "docker/minio"
    release = services["minio"]["build"]["args"]["MINIO_RELEASE"]
    assert release >= CVE_2025_62506_FIXED_IN and services["minio"]["image"].endswith(f":{release}")
    assert "curl" not in services["minio"]["healthcheck"]["test"]


def test_flower_is_optional_behind_the_monitoring_profile(services: dict) -> None:
    # Given the flower service
    # When we read its profiles
    # Then a plain `docker compose up` does not start it
    assert services["flower"]["profiles"] == ["monitoring"]


def test_the_multi_gpu_override_adds_copies_of_the_worker_each_on_its_own_gpu(services: dict) -> None:
    # Given the multi-GPU override and compose.yaml's worker without its GPU reservation
    override = load_compose(MULTI_GPU_FILE)["services"]
    base = {k: v for k, v in services["worker"].items() if k != "deploy"}
    # When we compare each service the override adds with it
    gpus = []
    for name, block in override.items():
        assert name.startswith("worker-gpu") and name not in services, name
        assert {k: v for k, v in block.items() if k != "deploy"} == base, f"{name} drifted from compose.yaml's worker"
        (device,) = block["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and "count" not in device
        gpus += device["device_ids"]
    # Then each is the same worker on one GPU of its own, none on GPU 0 (compose.yaml's worker has it)
    assert gpus and len(gpus) == len(set(gpus)) and "0" not in gpus
