"""recipients: the reason of a bounce or block (reason)

Revision ID: 3b7c9e2f4d10
Revises: 8f2b6d4e1a37
Create Date: 2026-11-30 13:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '3b7c9e2f4d10'
down_revision = '8f2b6d4e1a37'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason', sa.String(length=30), nullable=False,
                                      server_default=''))


def downgrade():
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.drop_column('reason')
