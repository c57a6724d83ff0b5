"""An S3-compatible server on loopback for the object-storage tests: moto's standalone server (it speaks S3's
HTTP protocol), one per test session, with the environment a client needs to reach it. No test talks to a
real cloud."""

import os
import secrets
from typing import Dict

from raynodes import free_port


class S3Server:
    """moto's ThreadedMotoServer on 127.0.0.1 (a thread of the test process); `env` holds the only settings a
    client gets: the standard AWS variables, never an ncl-ray flag."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        key, secret = self._user_with_s3_access()
        self.env: Dict[str, str] = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": key,
                                    "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
                                    "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def _user_with_s3_access(self):
        """Turn moto's request authentication on (after the three IAM calls that follow), with one IAM user
        allowed s3:*: from then on a request signed with any other key is refused, as a cloud would."""
        import json

        import boto3
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        settings.INITIAL_NO_AUTH_ACTION_COUNT = 3  # the server runs in this process: its settings are ours
        ActionAuthenticatorMixin.request_count = 0
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key=secrets.token_hex(16))
        iam.create_user(UserName="ncl-ray-test")
        iam.put_user_policy(UserName="ncl-ray-test", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        made = iam.create_access_key(UserName="ncl-ray-test")["AccessKey"]
        return made["AccessKeyId"], made["SecretAccessKey"]

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = ""):
        """Every object key under the prefix."""
        out, token = [], None
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client().list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def process_env(self) -> Dict[str, str]:
        """os.environ for a CLI run against this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RAY_ADDRESS"}
        env.update(self.env)
        return env

    def stop(self) -> None:
        self.server.stop()
