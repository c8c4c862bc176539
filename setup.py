from setuptools import find_packages, setup

with open("forsun/version.py") as fp:
    version = fp.read().split('version = "')[1].split('"')[0]

setup(
    name="forsun",
    version=version,
    description="A high-performance timed-task service: delay and crontab-like plans firing "
                "shell, HTTP, Redis, Thrift, beanstalk and MySQL actions",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(exclude=("tests", "tests.*")),
    python_requires=">=3.9",
    install_requires=[
        "tornado>=6.1",
        "thrift>=0.16",
        "redis[hiredis]>=5.0",
        "PyMySQL>=1.0",
        "greenstalk>=2.0",
        "msgpack>=1.0",
        "psutil>=5.8",
        "prometheus-client>=0.17",  # GET /metrics (forsun/metrics.py)
        "tzdata; platform_system == 'Windows'",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-tornado>=0.8",
            "setuptools<82",
            "croniter>=2",
            # hypothesis-jsonschema 0.23 breaks on newer hypothesis ("'many' object has no
            # attribute 'more'"); 6.155 is the newest release it works with
            "hypothesis>=6,<6.156",
            "pexpect>=4.8",
            "jsonschema>=4.18",  # tests/test_http_openapi.py: answers against the OpenAPI doc
            "openapi-spec-validator>=0.7",
            "hypothesis-jsonschema>=0.23",  # tests/test_http_fuzz.py: bodies from the schema
            "celery[redis]>=5.3",  # examples/celery_extension.py and its end-to-end test
        ],
    },
    entry_points={
        "console_scripts": [
            "forsund = forsun.daemon:run",
            "forsun = forsun.cli:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Tornado",
    ],
)
