"""What a local broker runs on: Apache Kafka's jars from Maven Central (fetched once, cached) and a Java runtime.

No Kafka download from apache.org: the broker's jars are fetched once with Maven
(``mvn dependency:copy-dependencies`` on the small pom below) into a project-local cache,
``.onevoice/cache/kafka-<version>/libs`` (``ONEVOICE_CACHE_DIR`` overrides the cache root
``.onevoice/cache``), then reused; a secure broker also needs Kafka's AclCommand
(``org.apache.kafka:kafka-tools``, one jar).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from services.devkit.broker_common import BrokerError, console, file_lock, spinner

KAFKA_VERSION = "4.1.1"
#: log4j-core version that kafka_2.13 KAFKA_VERSION depends on; the SLF4J 1.x binding must match it.
LOG4J_VERSION = "2.24.3"
KAFKA_TOOLS = "kafka-tools"

_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by onevoice (services/devkit/kafka_jars.py): the jars of a local Apache Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.onevoice</groupId>
  <artifactId>onevoice-kafka-broker</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <!-- Kafka brings slf4j-api 1.7.x and log4j2: the SLF4J 1.x binding, same version as log4j-core. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def cache_root() -> Path:
    """Root of onevoice's download cache: ``$ONEVOICE_CACHE_DIR`` or ``./.onevoice/cache``."""
    env = os.environ.get("ONEVOICE_CACHE_DIR")
    return (Path(env) if env else Path.cwd() / ".onevoice" / "cache").expanduser().resolve()


def kafka_cache_dir() -> Path:
    return cache_root() / f"kafka-{KAFKA_VERSION}"


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError("`java` not found: the local Kafka broker needs a Java 17+ runtime on PATH (or JAVA_HOME).")
    return found


def ensure_kafka_jars(*, quiet: bool = False) -> Path:
    """Return the directory holding the broker's jars, downloading them with Maven the first time."""
    base = kafka_cache_dir()
    libs = base / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    with file_lock(base / ".lock"):
        if marker.exists():  # another process finished the download while we waited
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError(
                "`mvn` (Apache Maven) not found: it fetches the Kafka broker jars from Maven Central "
                "the first time. Install Maven (e.g. `apt-get install maven`)."
            )
        pom = base / "pom.xml"
        pom.write_text(_POM)
        staging = base / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        started = time.monotonic()
        with spinner(quiet, f"Downloading Apache Kafka {KAFKA_VERSION} jars from Maven Central (first run only)…"):
            proc = subprocess.run(cmd, cwd=base, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            out = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise BrokerError(f"Fetching the Kafka jars failed ({' '.join(cmd)}; exit {proc.returncode}):\n{out}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.write_text(f"kafka_2.13 {KAFKA_VERSION}, fetched in {time.monotonic() - started:.1f}s\n")
        shown = console(quiet)
        if shown is not None:
            n = len(list(libs.glob("*.jar")))
            shown.print(f"[green]✓[/] Kafka {KAFKA_VERSION}: {n} jars in {libs} ({time.monotonic() - started:.0f}s)")
    return libs


def _tools_pom(version: str) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by onevoice (services/devkit/kafka_jars.py): Kafka AclCommand, for a secure local broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.onevoice</groupId>
  <artifactId>onevoice-kafka-tools</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
</project>
"""


def ensure_tools_jar() -> Path:
    """The directory of `org.apache.kafka:kafka-tools` (AclCommand, for a secure broker; the broker jars bring
    its dependencies), fetched with Maven the first time."""
    cache_dir, version = kafka_cache_dir(), KAFKA_VERSION
    target = cache_dir / KAFKA_TOOLS
    jar = target / f"kafka-tools-{version}.jar"
    if jar.exists():
        return target
    with file_lock(cache_dir / ".tools.lock"):
        if jar.exists():
            return target
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError("`mvn` (Apache Maven) not found: it fetches Kafka's AclCommand jar the first time.")
        target.mkdir(parents=True, exist_ok=True)
        pom = target / "pom.xml"
        pom.write_text(_tools_pom(version))
        proc = subprocess.run([mvn, "-q", "-B", "-f", str(pom), "dependency:copy",
                               f"-Dartifact=org.apache.kafka:kafka-tools:{version}", f"-DoutputDirectory={target}"],
                              cwd=target, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not jar.exists():
            raise BrokerError(f"fetching kafka-tools {version} failed: {(proc.stdout + proc.stderr).strip()[-800:]}")
    return target
