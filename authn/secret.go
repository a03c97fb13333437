package authn

import (
	"crypto/rand"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

const (
	metaBucket = "authn"
	secretKey  = "jwt-secret"
)

// LoadOrCreateSecret returns the HS256 key kept in db, generating a random
// 256-bit key the first time, so tokens survive a restart without any set-up.
func LoadOrCreateSecret(db *bolt.DB) ([]byte, error) {
	var secret []byte
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return err
		}
		if v := b.Get([]byte(secretKey)); v != nil {
			secret = append([]byte(nil), v...)
			return nil
		}
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return err
		}
		return b.Put([]byte(secretKey), secret)
	})
	if err != nil {
		return nil, fmt.Errorf("load or create jwt secret: %w", err)
	}
	return secret, nil
}
