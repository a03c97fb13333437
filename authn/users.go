package authn

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// User is a registered account.
type User struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Hash    []byte    `json:"hash"` // bcrypt
	Created time.Time `json:"created"`
}

const usersBucket = "users"

// Users keeps accounts in the embedded store, keyed by username, with
// bcrypt password hashes.
type Users struct {
	db    *bolt.DB
	cost  int
	dummy []byte // a hash to compare against for unknown users
}

// NewUsers returns the user store in db. cost is the bcrypt cost
// (bcrypt.DefaultCost if 0); tests pass bcrypt.MinCost to stay fast.
func NewUsers(db *bolt.DB, cost int) (*Users, error) {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(usersBucket))
		return err
	}); err != nil {
		return nil, fmt.Errorf("create users bucket: %w", err)
	}
	// Comparing against a hash of the same cost for unknown users makes a
	// wrong name cost as much time as a wrong password (no enumeration).
	dummy, err := bcrypt.GenerateFromPassword(bcryptInput("chatd-dummy-password"), cost)
	if err != nil {
		return nil, fmt.Errorf("dummy hash: %w", err)
	}
	return &Users{db: db, cost: cost, dummy: dummy}, nil
}

// ValidUsername reports whether name is 3-32 of A-Za-z0-9_.-.
func ValidUsername(name string) bool {
	if len(name) < 3 || len(name) > 32 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidPassword reports whether password has 8-256 bytes.
func ValidPassword(password string) bool { return len(password) >= 8 && len(password) <= 256 }

// Add creates a user. It fails with ErrBadUsername, ErrBadPassword or
// ErrUserExists.
func (u *Users) Add(name, password string) (*User, error) {
	if !ValidUsername(name) {
		return nil, ErrBadUsername
	}
	if !ValidPassword(password) {
		return nil, ErrBadPassword
	}
	hash, err := bcrypt.GenerateFromPassword(bcryptInput(password), u.cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	user := &User{ID: randomID(), Name: name, Hash: hash, Created: time.Now().UTC()}
	raw, err := json.Marshal(user)
	if err != nil {
		return nil, err
	}
	err = u.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(usersBucket))
		if b.Get([]byte(name)) != nil {
			return ErrUserExists
		}
		return b.Put([]byte(name), raw)
	})
	if err != nil {
		return nil, err
	}
	return user, nil
}

// Get returns the user called name, or nil if there is none.
func (u *Users) Get(name string) (*User, error) {
	var user *User
	err := u.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket([]byte(usersBucket)).Get([]byte(name))
		if raw == nil {
			return nil
		}
		user = new(User)
		return json.Unmarshal(raw, user)
	})
	if err != nil {
		return nil, fmt.Errorf("read user: %w", err)
	}
	return user, nil
}

// Check returns the user if password is theirs, else ErrInvalidCredentials.
// An unknown user costs the same bcrypt comparison as a known one.
func (u *Users) Check(name, password string) (*User, error) {
	user, err := u.Get(name)
	if err != nil {
		return nil, err
	}
	hash := u.dummy
	if user != nil {
		hash = user.Hash
	}
	if bcrypt.CompareHashAndPassword(hash, bcryptInput(password)) != nil || user == nil {
		return nil, ErrInvalidCredentials
	}
	return user, nil
}

// bcryptInput maps a password of up to 256 bytes to bcrypt's input, which
// may not pass 72 bytes: the base64 of its SHA-256 (44 bytes, no NUL).
func bcryptInput(password string) []byte {
	sum := sha256.Sum256([]byte(password))
	return []byte(base64.StdEncoding.EncodeToString(sum[:]))
}
