#!/usr/bin/env bash
# Installs the real components the integration tests start (each test starts
# and stops its own instances on 127.0.0.1). Skips what is already there.
# See ../shared/TESTING.md for how each one is installed on these machines.
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=()
command -v etcd >/dev/null 2>&1 || apt_packages+=(etcd-server etcd-client)
# Real remote-write senders: Prometheus 2.42 and vmagent (in victoria-metrics).
command -v prometheus >/dev/null 2>&1 || apt_packages+=(prometheus)
command -v vmagent >/dev/null 2>&1 || apt_packages+=(victoria-metrics)

# Java 17 and Maven fetch and run Cassandra (see below).
command -v java >/dev/null 2>&1 || apt_packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || apt_packages+=(maven)

if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "install-deps: installing ${apt_packages[*]} from Debian"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

# sed reads to the end: `head` could close the pipe early and, with
# pipefail, fail the script on the writer's SIGPIPE.
etcd --version | sed -n 1p

# helm and kubeconform (built with Go, cached outside the clone) and the
# Kubernetes JSON schemas kubeconform validates the chart against (from
# PyPI's kubernetes-validate; kubeconform's own download is not reachable).
tools="${STRATA_TOOLS:-$HOME/.cache/strata-tools}"
mkdir -p "$tools/bin"
if [ ! -x "$tools/bin/helm" ]; then
  echo "install-deps: building helm (a few minutes, once)"
  GOBIN="$tools/bin" GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@v3.22.0
fi
if [ ! -x "$tools/bin/kubeconform" ]; then
  echo "install-deps: building kubeconform"
  GOBIN="$tools/bin" GOFLAGS=-mod=mod go install github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
fi
schemas="$tools/k8s-schemas-1.37"
if [ ! -f "$schemas/_definitions.json" ]; then
  echo "install-deps: installing Kubernetes JSON schemas"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q kubernetes-validate==1.37.0
  src=$("$tools/venv/bin/python" -c 'import kubernetes_validate,os;print(os.path.dirname(kubernetes_validate.__file__))')/kubernetes-json-schema/v1.37.0-local-strict
  mkdir -p "$schemas"
  cp "$src"/*.json "$schemas/"
  sed -i "s#\"/api/_definitions.json#\"file://$schemas/_definitions.json#g" "$schemas"/*.json
fi
# Prometheus 3.16 (and promtool), the PromQL reference of the differential
# test, built with Go as TESTING.md says (a few minutes, once).
if [ ! -x "$tools/prometheus-3.16/prometheus" ]; then
  echo "install-deps: building Prometheus 3.16 (a few minutes, once)"
  GOBIN="$tools/prometheus-3.16" GOFLAGS=-mod=mod GOTOOLCHAIN=local go install \
    -ldflags "-X github.com/prometheus/common/version.Version=3.16.0" \
    github.com/prometheus/prometheus/cmd/prometheus@v0.316.0 \
    github.com/prometheus/prometheus/cmd/promtool@v0.316.0
fi

# The remote-write receiver compliance suite (prometheus/compliance,
# remotewrite/receiver), for tests/rw_compliance.rs: its module from the Go
# proxy, copied to a writable place, Prometheus bumped to one that compiles,
# and the test binary built once (TESTING.md, "the official suites").
rw_suite="$tools/rw-compliance"
if [ ! -x "$rw_suite/rw-receiver-compliance.test" ]; then
  echo "install-deps: building the remote-write receiver compliance suite (a few minutes, once)"
  rw_module=github.com/prometheus/compliance/remotewrite@v0.0.0-20260223092825-818283e1171e
  rw_dir=$(GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "$rw_module" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$rw_suite/src"
  mkdir -p "$rw_suite"
  cp -r "$rw_dir" "$rw_suite/src"
  chmod -R u+w "$rw_suite/src"
  (
    cd "$rw_suite/src"
    GOTOOLCHAIN=local GOFLAGS=-mod=mod go get github.com/prometheus/prometheus@v0.307.3
    GOTOOLCHAIN=local GOFLAGS=-mod=mod go test -c -o "$rw_suite/rw-receiver-compliance.test" ./receiver
  )
fi

# moto (S3 and DynamoDB) in the tools venv, for tests/store_backends.rs.
if [ ! -x "$tools/venv/bin/moto_server" ]; then
  echo "install-deps: installing moto server"
  [ -x "$tools/venv/bin/pip" ] || python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q 'moto[server]'
fi
# Apache Cassandra 5.0.9 from Maven Central (Java 17, see TESTING.md),
# for tests/store_backends.rs.
cassandra="$tools/cassandra-5.0.9"
if [ ! -f "$cassandra/lib/cassandra-all-5.0.9.jar" ]; then
  echo "install-deps: fetching Apache Cassandra 5.0.9 jars"
  mkdir -p "$cassandra"
  cat > "$cassandra/pom.xml" <<'POM'
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>cassandra-lib</artifactId><version>0</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId><version>5.0.9</version></dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
  </plugin></plugins></build>
</project>
POM
  rm -rf "$cassandra/lib.tmp"
  mvn -B -q -f "$cassandra/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$cassandra/lib.tmp" -DincludeScope=runtime
  rm -rf "$cassandra/lib"
  mv "$cassandra/lib.tmp" "$cassandra/lib"
fi

"$tools/bin/helm" version --short
"$tools/prometheus-3.16/prometheus" --version | sed -n 1p
