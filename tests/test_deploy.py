"""deploy/: the Kubernetes manifests rendered offline, the compose launcher, the image recipe.

`kubectl kustomize` renders the manifests without a cluster; `kubectl label --local -o
json` turns the rendered YAML into JSON, also offline. No container daemon here: the
Dockerfile is checked as text, and the compose launcher in its dry-run mode.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import helpers

DEPLOY = helpers.ROOT / 'deploy'
needs_kubectl = pytest.mark.skipif(shutil.which('kubectl') is None, reason='kubectl not installed')


def _render(overlay: str) -> dict[str, dict[str, Any]]:
  """Objects of `kubectl kustomize deploy/k8s/<overlay>`, by kind (each kind appears once)."""
  rendered = subprocess.run(['kubectl', 'kustomize', str(DEPLOY / 'k8s' / overlay)],
                            capture_output=True, text=True, timeout=60, check=True).stdout
  as_json = subprocess.run(
      ['kubectl', 'label', '--local', '-o', 'json', '-f', '-', 'rendered=offline'],
      input=rendered, capture_output=True, text=True, timeout=60, check=True).stdout
  objects, decoder, index = [], json.JSONDecoder(), 0
  while index < len(as_json):
    if as_json[index].isspace():
      index += 1
      continue
    obj, index = decoder.raw_decode(as_json, index)
    objects.append(obj)
  by_kind = {o['kind']: o for o in objects}
  assert len(by_kind) == len(objects), 'a kind appears twice'
  return by_kind


def _container(obj: dict[str, Any]) -> dict[str, Any]:
  (container,) = obj['spec']['template']['spec']['containers']
  return container


def _env(container: dict[str, Any]) -> dict[str, str]:
  return {e['name']: e['value'] for e in container.get('env', [])}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
  return all(labels.get(k) == v for k, v in selector.items())


@needs_kubectl
@pytest.mark.parametrize('overlay, workers', [('base', 3), ('overlays/five-workers', 5)])
def test_kustomize_renders_workers_service_and_driver(overlay: str, workers: int) -> None:
  objects = _render(overlay)
  assert set(objects) == {'Deployment', 'Service', 'Job', 'PersistentVolumeClaim', 'NetworkPolicy'}
  deployment, service, job = objects['Deployment'], objects['Service'], objects['Job']
  worker, driver = _container(deployment), _container(job)

  # The headless Service selects the worker pods and points at their gRPC port.
  assert service['spec']['clusterIP'] == 'None'
  worker_labels = deployment['spec']['template']['metadata']['labels']
  assert _matches(service['spec']['selector'], worker_labels)
  assert _matches(deployment['spec']['selector']['matchLabels'], worker_labels)
  (port,) = service['spec']['ports']
  (container_port,) = worker['ports']
  assert port['targetPort'] == container_port['name']
  assert worker['readinessProbe']['tcpSocket']['port'] == container_port['name']
  assert f'--port={container_port["containerPort"]}' in worker['args']
  assert worker['args'][:3] == ['python', '-m', 'scripts.start_worker']
  # Clients trained at once = the CPU limit (not the node's cores).
  assert (f'--max_concurrent_computation_calls={worker["resources"]["limits"]["cpu"]}'
          in worker['args'])

  # The driver waits for exactly as many workers as the Deployment runs, then trains.
  assert deployment['spec']['replicas'] == workers
  env = _env(driver)
  assert env['WORKERS'] == str(workers)
  assert env['WORKER_SERVICE'] == f'{service["metadata"]["name"]}:{port["port"]}'
  script = ' '.join(driver['args'])
  assert 'scripts.worker_addresses --service="$WORKER_SERVICE" --expect="$WORKERS"' in script
  assert '--tff_worker="$addresses"' in script and '--resume' in script
  assert job['spec']['template']['spec']['restartPolicy'] == 'Never'
  assert job['spec']['backoffLimit'] >= 1  # A lost worker: the next attempt resumes.
  volume = job['spec']['template']['spec']['volumes'][0]
  assert volume['persistentVolumeClaim']['claimName'] == objects['PersistentVolumeClaim']['metadata']['name']
  assert '--root_output_dir=' + driver['volumeMounts'][0]['mountPath'] in script

  # Only the driver reaches the workers.
  policy = objects['NetworkPolicy']['spec']
  assert _matches(policy['podSelector']['matchLabels'], worker_labels)
  (rule,) = policy['ingress']
  assert _matches(rule['from'][0]['podSelector']['matchLabels'],
                  job['spec']['template']['metadata']['labels'])
  assert not _matches(rule['from'][0]['podSelector']['matchLabels'], worker_labels)
  assert worker['image'] == driver['image'] == 'fedrecipes:latest'


@needs_kubectl
@pytest.mark.slow
def test_the_drivers_recipe_flags_are_accepted(tmp_path: Path) -> None:
  """The Job's recipe command parses: it gets as far as connecting to the (absent) worker."""
  script = ' '.join(_container(_render('base')['Job'])['args'])
  recipe = script.split('exec ', 1)[1].split()
  assert recipe[:3] == ['python', '-m', 'recipes.fed_avg']
  args = [a for a in recipe[3:] if not a.startswith(('--tff_worker', '--root_output_dir'))]
  result = helpers.run_in_host('recipes.fed_avg', *args, '--tff_worker=localhost:1',
                              f'--root_output_dir={tmp_path}', timeout=120)
  helpers.assert_one_line_error(result, 'no TFF worker answers at localhost:1')


def test_compose_launcher_addresses_each_worker() -> None:
  env = dict(os.environ, DRY_RUN='1', FEDRECIPES_RUNS=str(helpers.ROOT / 'runs' / 'compose-test'))
  result = subprocess.run([str(DEPLOY / 'compose' / 'run.sh'), '3', 'python', '-m',
                           'recipes.fed_avg', '--total_rounds=5'],
                          capture_output=True, text=True, timeout=30, env=env, check=True)
  up, run = result.stdout.strip().splitlines()
  assert '--scale worker=3 worker' in up and ' up -d --wait ' in up
  addresses = re.search(r'--tff_worker=(\S+)', run).group(1).replace('\\,', ',')
  assert addresses == ','.join(f'fedrecipes-worker-{i}:8000' for i in (1, 2, 3))
  assert 'run --rm driver python -m recipes.fed_avg --total_rounds=5' in run
  bad = subprocess.run([str(DEPLOY / 'compose' / 'run.sh'), '0', 'python'], capture_output=True,
                       text=True, timeout=30, env=env)
  assert bad.returncode == 2 and 'usage' in bad.stderr


@pytest.mark.skipif(shutil.which('yq') is None, reason='yq not installed')
def test_compose_file_services() -> None:
  compose = json.loads(subprocess.run(['yq', '.', str(DEPLOY / 'compose' / 'compose.yaml')],
                                      capture_output=True, text=True, timeout=30,
                                      check=True).stdout)
  assert compose['name'] == 'fedrecipes'  # Container names fedrecipes-worker-<i> (run.sh).
  worker, driver = compose['services']['worker'], compose['services']['driver']
  assert worker['command'][:4] == ['python', '-m', 'scripts.start_worker', '--port=8000']
  assert 'ports' not in worker  # Unauthenticated gRPC stays on the project's network.
  assert driver['profiles'] == ['driver']
  assert driver['depends_on']['worker']['condition'] == 'service_healthy'
  assert any(v.endswith(':/runs') for v in driver['volumes'])
  assert worker['build'] == driver['build'] == {'context': '../..', 'dockerfile': 'deploy/Dockerfile'}


def test_dockerfile_installs_the_pinned_lock() -> None:
  dockerfile = (DEPLOY / 'Dockerfile').read_text()
  assert re.search(r'^FROM python:3\.11-slim$', dockerfile, re.M)
  assert 'requirements/lock.txt' in dockerfile and 'bash scripts/setup.sh' in dockerfile
  assert '"scripts.start_worker", "--port=8000"' in dockerfile and 'EXPOSE 8000' in dockerfile
  assert re.search(r'^USER (?!root)', dockerfile, re.M)
  ignored = (helpers.ROOT / '.dockerignore').read_text().split()
  assert {'.venv', '.git', 'runs'} <= set(ignored)


def test_worker_addresses_resolves_and_waits() -> None:
  result = helpers.run_binary('scripts.worker_addresses', '--service=localhost:8000', timeout=60,
                              check=True)
  assert result.stdout.strip() == '127.0.0.1:8000'
  result = helpers.run_binary('scripts.worker_addresses', '--service=localhost:8000', '--expect=2',
                              '--timeout_seconds=0.5', timeout=60)
  helpers.assert_one_line_error(result, '1 of the 2 expected workers', 'localhost')
