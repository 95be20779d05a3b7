"""Settings as the original service reads them: pydantic-settings, the environment over .env."""

from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    MONGODB_URL: str = "mongodb://localhost:27017"
    MONGODB_DATABASE_NAME: str = "flowise_proxy"
    CORS_ALLOW_ORIGINS: list[str] = ["*"]

    class Config:
        env_file = ".env"


settings = Settings()
