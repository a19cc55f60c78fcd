"""Reads through fanout's S3 gateway with boto3, as a model loader would, and prints what it got
as JSON: SigV4 requests (boto3's default), SigV2 header-signed requests (signature_version 's3'),
and presigned URLs (the default presigner and an s3v4 one). Run by test/integration/gateway.test.ts
under every python3 here that has boto3 (Debian's python3-boto3, a pip one), since botocore's
signing has changed between versions."""
import hashlib
import json
import sys
import urllib.request

import boto3
from botocore.config import Config

endpoint, access_key, secret_key = sys.argv[1:4]


def client(signature_version=None):
    config = Config(signature_version=signature_version, s3={'addressing_style': 'path'}, retries={'max_attempts': 1})
    return boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1', aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, config=config)


def read(c):
    whole = c.get_object(Bucket='data', Key='big.bin')['Body'].read()
    part = c.get_object(Bucket='data', Key='big.bin', Range='bytes=100-199')['Body'].read()
    keys = [o['Key'] for o in c.list_objects_v2(Bucket='data', Prefix='tree/')['Contents']]
    size = c.head_object(Bucket='data', Key='big.bin')['ContentLength']
    # Requests on the bucket itself: botocore signs their SigV2 resource as "/data/".
    bucket = {
        'keys': [o['Key'] for o in c.list_objects_v2(Bucket='data')['Contents']],
        'head': c.head_bucket(Bucket='data')['ResponseMetadata']['HTTPStatusCode'],
        'location': c.get_bucket_location(Bucket='data').get('LocationConstraint'),
    }
    return {'sha256': hashlib.sha256(whole).hexdigest(), 'range': part.hex(), 'keys': keys, 'size': size, 'bucket': bucket}


def presigned(c):
    url = c.generate_presigned_url('get_object', Params={'Bucket': 'data', 'Key': 'hello.txt'}, ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=30) as res:
        return {'url': url, 'body': res.read().decode()}


def presigned_listing(c):
    # Fetched by the test: a listing's URL carries list-type, prefix and encoding-type besides the signature.
    return c.generate_presigned_url('list_objects_v2', Params={'Bucket': 'data', 'Prefix': 'tree/'}, ExpiresIn=300)


print(json.dumps({
    'sigv4': read(client()),
    'sigv2': read(client('s3')),
    'presignDefault': presigned(client()),
    'presignV4': presigned(client('s3v4')),
    'presignV2': presigned(client('s3')),
    'listingV2': presigned_listing(client('s3')),
    'listingV4': presigned_listing(client('s3v4')),
}))
