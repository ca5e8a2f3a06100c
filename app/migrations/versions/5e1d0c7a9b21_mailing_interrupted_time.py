"""mailings: time spent interrupted (interrupted_at, interrupted_seconds)

Revision ID: 5e1d0c7a9b21
Revises: c22486197e9f
Create Date: 2026-11-30 12:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = '5e1d0c7a9b21'
down_revision = 'c22486197e9f'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('mailings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('interrupted_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('interrupted_seconds', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade():
    with op.batch_alter_table('mailings', schema=None) as batch_op:
        batch_op.drop_column('interrupted_seconds')
        batch_op.drop_column('interrupted_at')
