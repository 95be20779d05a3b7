"""The service's own MongoDB connection: one Motor client, opened and pinged at startup."""

from motor.motor_asyncio import AsyncIOMotorClient

from app.config import settings


class Connection:
    client: AsyncIOMotorClient | None = None


connection = Connection()


async def connect() -> None:
    connection.client = AsyncIOMotorClient(settings.MONGODB_URL)
    await connection.client.admin.command("ping")


async def close() -> None:
    if connection.client is not None:
        connection.client.close()


def database():  # noqa: ANN201 - a Motor database
    return connection.client[settings.MONGODB_DATABASE_NAME]
