"""Open the event stream that the settings name."""

from __future__ import annotations

from urllib.parse import urlsplit

from playpulse.config import Settings
from playpulse.stream.base import EventStream
from playpulse.stream.sqlite import SQLiteStream


def open_stream(settings: Settings) -> EventStream:
    """The stream ``settings.stream_url`` names: ``kafka://HOST:PORT[,HOST:PORT...]/TOPIC``
    opens :class:`~playpulse.stream.kafka.KafkaStream` (the topic's partitions; retention
    is the broker's); ``kinesis://STREAM`` opens
    :class:`~playpulse.stream.kinesis.KinesisStream` (an existing stream: its open shards
    are the partitions; region, endpoint and credentials from the environment); anything
    else the embedded SQLite stream (``stream_url``'s file,
    else ``stream.db`` in ``settings.data_dir``).

    Raises :class:`~playpulse.errors.ConfigError` for a malformed ``kafka://`` or
    ``kinesis://`` URL or if
    the existing SQLite stream file has a different number of partitions than
    ``settings.num_partitions``, and :class:`~playpulse.errors.StreamError` if the stream
    cannot be opened (for Kafka: no broker answered, the topic is unusable; for Kinesis:
    the stream does not exist or cannot be described).
    """
    if settings.stream_url and urlsplit(settings.stream_url).scheme == "kafka":
        # Imported here: confluent-kafka (librdkafka) loads only for a Kafka stream.
        from playpulse.stream.kafka import KafkaStream, parse_kafka_url

        url = parse_kafka_url(settings.stream_url)
        return KafkaStream(url.bootstrap_servers, url.topic)
    if settings.stream_url and urlsplit(settings.stream_url).scheme == "kinesis":
        # Imported here: boto3 loads only for a Kinesis stream.
        from playpulse.stream.kinesis import KinesisStream, parse_kinesis_url

        return KinesisStream(parse_kinesis_url(settings.stream_url))
    return SQLiteStream(
        settings.stream_path,
        num_partitions=settings.num_partitions,
        retention=settings.retention,
        synchronous=settings.stream_synchronous,
        max_bytes=settings.stream_max_bytes,
    )
